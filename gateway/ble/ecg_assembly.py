"""BLE ECG notifications (40-560 ms each) -> ~1 s ``EcgFrame`` readings.

The contract's ECG reading is "one frame, typically 1 s", and plausibility
rejects frames shorter than 0.2 s, so short radio frames are joined here.

Time base (docs/vendor_ecg.md "Timing"): a patch's clock is not trusted, so
the first sample after a (re)connect or a gap is stamped with the gateway
receive time of that notification minus its duration, and later samples are
counted from there at ``fs``. A gap (missing vendor ``seq``, or a jump in the
Polar sensor clock) closes the current frame and starts a new time base, and
the emitted frame ``seq`` skips one number so the stream core's frame tracker
sees the gap instead of stitching across it (a stitched gap could pass for a
pause). A leftover shorter than 0.2 s at a gap or disconnect is dropped and
counted in :attr:`EcgAssembler.dropped_samples`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from stream.models import EcgFrame

ECG_FRAME_SECONDS = 1.0
MIN_FRAME_SECONDS = 0.2  # stream/plausibility.py: a frame is 0.2-10 s


class EcgAssembler:
    def __init__(self, frame_seconds: float = ECG_FRAME_SECONDS) -> None:
        self.frame_seconds = frame_seconds
        self.seq = 0  # of the next emitted frame
        self.dropped_samples = 0
        self._fs: float | None = None
        self._t0: datetime | None = None  # time of the first buffered sample
        self._samples: list[np.ndarray] = []
        self._lead_off: list[np.ndarray] = []
        self._n = 0

    def push(
        self, samples_uv: np.ndarray, fs: float, lead_off: bool, received_at: datetime, *, gap: bool = False
    ) -> list[EcgFrame]:
        """Add one notification's samples (µV); returns the frames now complete."""
        out: list[EcgFrame] = []
        if gap or (self._fs is not None and fs != self._fs):
            out += self.restart()
        if self._t0 is None:
            self._t0 = received_at - timedelta(seconds=len(samples_uv) / fs)
        self._fs = fs
        self._samples.append(np.asarray(samples_uv, dtype=np.float64))
        self._lead_off.append(np.full(len(samples_uv), lead_off))
        self._n += len(samples_uv)
        per_frame = max(1, int(round(fs * self.frame_seconds)))
        while self._n >= per_frame:
            out.append(self._emit(per_frame))
        return out

    def restart(self) -> list[EcgFrame]:
        """A gap or a new connection: close what is buffered and start a new time base."""
        out: list[EcgFrame] = []
        if self._fs is not None and self._n:
            if self._n >= self._fs * MIN_FRAME_SECONDS:
                out.append(self._emit(self._n))
            else:
                self.dropped_samples += self._n
        self._samples, self._lead_off, self._n = [], [], 0
        self._t0 = None
        if self._fs is not None:
            self.seq += 1  # a missing seq tells the frame tracker there was a gap
        return out

    def _emit(self, n: int) -> EcgFrame:
        assert self._fs is not None and self._t0 is not None
        samples = np.concatenate(self._samples)
        lead = np.concatenate(self._lead_off)
        frame = EcgFrame(
            ts=self._t0,
            seq=self.seq,
            fs=self._fs,
            samples_uv=samples[:n].round(3).tolist(),
            lead_off=bool(lead[:n].any()),
        )
        self.seq += 1
        self._t0 = self._t0 + timedelta(seconds=n / self._fs)
        self._samples, self._lead_off = [samples[n:]], [lead[n:]]
        self._n -= n
        return frame
