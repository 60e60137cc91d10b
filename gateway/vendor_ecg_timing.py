"""Time base for vendor ECG frames that arrive over MQTT (`vg/{clinic}/device/{id}/gatt/5a7e0003`).

A vendor frame carries no time (docs/vendor_ecg.md "Timing": a patch's clock is
not trusted), only a uint16 `seq`. `gateway.ingress.decode_gatt` is pure and
stamps a frame on its own: its first sample at receive time minus its duration.
This keeper does what `gateway/ble/ecg_assembly.py` does for BLE: while `seq`
goes on by one (mod 65536) at the same rate, the next frame starts where the
last one ended, so the analyser sees a continuous trace rather than the jitter
of MQTT delivery. A gap in `seq`, a new rate, or a count that has drifted too
far from the receive clock starts a new time base. One keeper per consumer of a
session (the ECG lane handles a device's messages one at a time, in order).

It also keeps the frame's identity stable across QoS 1 redelivery: a frame whose
`seq` was seen moments ago gets the time it got then, hence the same
idempotency key, and the store drops it as a duplicate. Across a gateway
restart too: a device's track is first restored from its last stored frames
(`history`, the reading store's `ecg_frame_times`), so a frame stored but not
yet acknowledged when the gateway died comes back with the time it was stored
with, and the stream goes on where it stopped.

`seq` is unwrapped (65535 -> 0 counts on) so the frame tracker does not log a
gap every 18 hours of 1-s frames.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from stream.models import EcgFrame
from stream.store import StoredFrameTime

SEQ_MODULO = 1 << 16
# A counted frame may end this far after its arrival before the count is dropped for a new time base:
# the first frame of a base may have been delayed more than the later ones, and the patch's crystal
# runs fast by up to ~50 ppm (4 s a day). Frames delivered faster than real time (a backlog the broker
# held while the gateway was down) are counted on up to this far, then re-based: their times are off
# by at most this much and never run minutes into the future (plausibility would reject them).
MAX_AHEAD = timedelta(seconds=10)
# ... and may end this long before its arrival: a patch that paused without a seq gap, or a gateway
# that fell this far behind, is re-based on the receive clock.
MAX_BEHIND = timedelta(seconds=60)
# A seq seen within this long of its first arrival is a redelivery (an MQTT reconnect resends what was
# not acknowledged yet), not a patch that restarted its count.
REDELIVERY_WINDOW = timedelta(seconds=120)
RECENT_FRAMES = 64  # per device, for redelivery: more than a reconnect's unacknowledged frames of one patch


@dataclass
class _Track:
    fs: float
    wire_seq: int
    seq: int  # unwrapped
    next_ts: datetime  # where the last frame ended
    recent: OrderedDict[int, tuple[datetime, int, datetime]] = field(default_factory=OrderedDict)
    # wire seq -> (ts, unwrapped seq, first received_at)


class VendorEcgTimeBase:
    def __init__(self, history: Callable[[str], Sequence[StoredFrameTime]] | None = None) -> None:
        """`history(device_id)`: the device's last stored frames, oldest first (at most RECENT_FRAMES are kept)."""
        self._tracks: dict[str, _Track] = {}
        self._history = history
        self._restored: set[str] = set()
        self.rebased = 0  # new time bases after the first (gaps, drift, backlog): for tests and the curious

    def place(self, device_id: str, frame: EcgFrame, received_at: datetime) -> EcgFrame:
        """`frame` as decode_gatt stamped it (wire seq, ts = received_at - duration) -> its place in the stream."""
        wire = frame.seq if frame.seq is not None else 0
        dur = timedelta(seconds=len(frame.samples_uv) / frame.fs)
        if device_id not in self._restored:
            self._restore(device_id)
        tr = self._tracks.get(device_id)
        if tr is not None:
            seen = tr.recent.get(wire)
            if seen is not None and received_at - seen[2] <= REDELIVERY_WINDOW:
                return frame.model_copy(update={"ts": seen[0], "seq": seen[1]})
        ahead = (wire - tr.wire_seq) % SEQ_MODULO if tr is not None else 0
        if (
            tr is not None
            and ahead == 1
            and frame.fs == tr.fs
            and received_at - MAX_BEHIND <= tr.next_ts + dur <= received_at + MAX_AHEAD
        ):
            ts, seq = tr.next_ts, tr.seq + 1
        else:
            ts = frame.ts  # received_at - duration: a new time base
            if tr is None:
                seq = wire
            else:
                self.rebased += 1
                # Frames lost (also across the wrap): count on. Far "ahead" is a patch that restarted
                # its count: keep the epoch, so the frame tracker sees the jump back as a gap.
                seq = tr.seq + ahead if 0 < ahead < SEQ_MODULO // 2 else tr.seq - tr.seq % SEQ_MODULO + wire
        if tr is None:
            tr = self._tracks[device_id] = _Track(frame.fs, wire, seq, ts + dur)
        tr.fs, tr.wire_seq, tr.seq, tr.next_ts = frame.fs, wire, seq, ts + dur
        # stamped to the millisecond, as the store keeps device times: a track restored from the store after
        # a restart then gives a redelivered frame exactly the time (and so the key) it was stored with
        ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)
        tr.recent[wire] = (ts, seq, received_at)
        tr.recent.move_to_end(wire)
        if len(tr.recent) > RECENT_FRAMES:
            tr.recent.popitem(last=False)
        if ts == frame.ts and seq == wire:
            return frame
        return frame.model_copy(update={"ts": ts, "seq": seq})

    def _restore(self, device_id: str) -> None:
        """The device's track as its last stored frames left it (once per device, before its first frame)."""
        self._restored.add(device_id)
        rows = list(self._history(device_id))[-RECENT_FRAMES:] if self._history is not None else []
        if not rows:
            return
        last = rows[-1]
        tr = _Track(last.fs, last.seq % SEQ_MODULO, last.seq, last.ts + timedelta(seconds=last.n_samples / last.fs))
        for row in rows:
            tr.recent[row.seq % SEQ_MODULO] = (row.ts, row.seq, row.received_at)
            tr.recent.move_to_end(row.seq % SEQ_MODULO)
        self._tracks[device_id] = tr
