"""Per-patient streaming ECG analyser: the seam the stream core calls.

``EcgAnalyser.push`` takes one frame (typically 1 s) of one lead in µV and
returns the rhythm alarms the frame raised or cleared.  Inside, per frame:

1. gap / lead-off handling (a gap restarts the beat search; it is never a pause),
2. flat / saturation check, then the streaming QRS detector
   (:mod:`stream.ecg.qrs_detection`),
3. per-second signal quality (:mod:`stream.ecg.signal_quality`),
4. beat classification N/V (:mod:`stream.ecg.beat_classes`),
5. rhythm state machines (:mod:`stream.ecg.rhythms`).

Times are seconds on the analyser's own time base: the ``t0_s`` of the first
frame (0 if not given) plus samples / fs; a frame whose ``t0_s`` jumps starts
a new segment at that time.  Memory is bounded: a 12-s ring of raw samples,
fixed-size deques of beats and frames, and the detectors' fixed state.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from stream.ecg import filters, rhythms, vt_window
from stream.ecg.beat_classes import BeatClassifier
from stream.ecg.beat_model import FEATURES as BEAT_FEATURES
from stream.ecg.beat_model import BeatModel
from stream.ecg.beat_model import load as load_shipped_model
from stream.ecg.qrs_detection import QrsDetector
from stream.ecg.rhythms import Beat, Transition
from stream.ecg.signal_quality import (
    FrameQuality,
    assess_frame,
    beats_among,
    fast_median,
    sharp_spikes,
    steady_interval,
    unusable_kind,
)
from stream.ecg.vt_window import VtWindowDetector, VtWindowModel, WindowBeat

RING_S = 12.0  # raw samples kept for strips and beat morphology
STRIP_S = 10.0  # evidence strip length
BEATS_KEPT = 512  # recent (time, class) pairs exposed by ``beats``
FRAMES_KEPT = 16
SUMMARY_S = 60.0
CONTEXT_GOOD = 0.8  # share of good frames in the last 10 s for a beat to count clinically
RESET_AFTER_BAD_FRAMES = 2  # unusable frames after which the QRS detector starts afresh
# A detector that has found fewer QRSs than this in frames that are not noisy is still establishing
# its levels. If it saw a noisy frame meanwhile (an electrode settling, a handheld's first seconds) and
# then finds no QRS in BLIND_FRAMES frames that are not noisy, it learnt its levels on the artefact
# (QRSs "found" in the noise count for nothing): it starts afresh. Before, it took the QRSs after such
# a burst for noise and found no beat for minutes.
ESTABLISH_QRS = 8
BLIND_FRAMES = 2
_WIDTH_MS = BEAT_FEATURES.index("width_ms")
MIN_FRAME_S = 0.9  # shorter frames are gathered to about a second before analysis
JITTER_S = 0.1  # a frame starting this close to where the last one ended continues it (device
# clocks jitter and drift; a lost frame opens a gap of a whole frame) ...
CLOCK_FOLLOW = 0.25  # ... and this share of the difference moves the time base to the device's clock
# organised complexes: in the last ORG_WINDOW_S at least ORG_MIN_BEATS beats, each correlating
# >= ORG_CORR with the one before it, RR intervals within a factor ORG_RR_SPREAD of each other
ORG_WINDOW_S = 3.0
ORG_MIN_BEATS = 4
ORG_CORR = 0.90
ORG_LOW_FS = 200.0  # below this sampling rate one of them may fall short of ORG_CORR ...
ORG_CORR_ONE = 0.80  # ... down to this (sampling jitter on a 2-3-sample QRS)
ORG_RR_SPREAD = 1.6
VF_WINDOW_S = 4.0  # the VF detector judges 4 one-second frames at a time
# artefact content against the patient's own normal QRS complexes (after ARTEFACT_MIN_BEATS of them)
ARTEFACT_MIN_BEATS = 4
STEP_RATIO = 5.0  # a sample-to-sample jump this many times the steepest QRS slope
HF_RATIO = 0.15  # median |2nd difference| over the QRS amplitude
AMPLITUDE_RATIO = 5.0  # 0.7-40 Hz peak-to-peak over the QRS amplitude
# a pause is a quiet baseline: a beat-free frame that strays further than this many QRS amplitudes
# from the level before the last beat is an amplifier or electrode recovering from overload
PAUSE_BASELINE_RATIO = 1.0
# ... and one dominated by mains interference (50/60 Hz above this share of the QRS amplitude) is an
# electrode off the skin picking up the room, not a quiet heart: no pause or asystole is judged on it
MAINS_RATIO = 0.05
MAINS_HZ = (50.0, 60.0)  # China's mains is 50 Hz; 60 Hz for imported equipment and the US records
MIN_RR_AFTER_V_S = 0.24  # an off-template detection this soon after a ventricular beat is that
# beat's own second lobe or T wave: the ventricles are refractory (> 250 bpm
# is VF, which the VF detector judges from the waveform, not from beats)


@dataclass
class RhythmAlarm:
    condition: str  # contract condition name ("af", "vt", "pause", "lead_off", ...)
    active: bool  # True = raised, False = cleared
    start_s: float  # analyser time base (s)
    end_s: float | None
    detail: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=8)
def _mains_basis(n: int, fs: float) -> np.ndarray:
    """The 50/60 Hz basis for frames of n samples, shared by every patient's analyser (read only)."""
    t = np.arange(n) / fs
    hz = [f for f in MAINS_HZ if f < 0.5 * fs - 2.0]
    basis = np.exp(-2j * np.pi * np.outer(hz, t)) if hz else np.zeros((0, n), complex)
    basis.flags.writeable = False
    return basis


class BeatRing:
    """The last ``size`` beats (time, class) in two small arrays: a deque of tuples cost ~60 bytes a
    beat, ~30 KiB per patient for 512 (docs/capacity.md: memory per patch)."""

    _CODES = ("N", "V", "Q")

    def __init__(self, size: int) -> None:
        self._t = np.zeros(size)
        self._c = np.zeros(size, dtype=np.uint8)
        self.total = 0  # beats ever appended

    def append(self, t: float, cls: str) -> None:
        k = self.total % len(self._t)
        self._t[k] = t
        self._c[k] = self._CODES.index(cls) if cls in self._CODES else 2
        self.total += 1

    def items(self, last: int | None = None) -> list[tuple[float, str]]:
        """The last ``last`` beats (all kept when None), oldest first."""
        size = len(self._t)
        n = min(self.total, size) if last is None else min(last, self.total, size)
        idx = (np.arange(self.total - n, self.total) % size) if n else np.zeros(0, dtype=int)
        return [(float(self._t[i]), self._CODES[int(self._c[i])]) for i in idx]


class EcgAnalyser:
    """Streaming single-lead ECG analysis for one patient."""

    def __init__(
        self,
        fs: float,
        beat_model: BeatModel | None | str = "shipped",
        vt_model: VtWindowModel | None | str = "shipped",
        af_confirm: bool = True,
    ) -> None:
        """``beat_model``: the learned ventricular-beat model; ``"shipped"`` (the default) loads the one
        in ``stream/ecg/models``, None runs the morphology rules alone (training, comparison).
        ``vt_model``: the learned 4-s window VT model likewise (None: beat runs alone).
        ``af_confirm``: ask the AF screening model about the last 30 s before raising ``af``."""
        if not 100.0 <= fs <= 1000.0:
            raise ValueError(f"unsupported ECG sampling rate {fs} Hz (expected 125-500)")
        self.fs = float(fs)
        model = load_shipped_model() if isinstance(beat_model, str) else beat_model
        self._clf = BeatClassifier(fs, model)
        self._vt_model = vt_window.load() if isinstance(vt_model, str) else vt_model
        self._vtw = VtWindowDetector()
        self._wbeats: deque[WindowBeat] = deque(maxlen=64)
        self._wframes: deque[tuple[float, bool, bool, float]] = deque(maxlen=4)
        self._wclean: deque[bool] = deque(maxlen=4)  # those frames free of artefact
        # (window end s, feature vector) of every 4-s window judged, when a trainer sets it to a list
        self.window_log: list[tuple[float, np.ndarray]] | None = None
        self._vt_sources: dict[str, set[str]] = {"vt": set(), "vt_sustained": set()}
        self._vt_raised_at: dict[str, float] = {}
        # (t, feature vector) of every beat kept, when a trainer sets it to a list
        self.feature_log: list[tuple[float, np.ndarray]] | None = None
        self.centre_log: list[float] | None = None  # when a list: each beat's QRS energy centre (s)
        # (frame duration s, its quality) of every frame, when a caller (strip screening) sets it to a list
        self.frame_log: list[tuple[float, FrameQuality]] | None = None
        self._pre, self._post = self._clf.window()
        cap = 1
        while cap < RING_S * fs:
            cap *= 2
        self._cap = cap
        self._mask = cap - 1
        self._ring = np.zeros(cap, dtype=np.float32)
        # VF features: a 2-9 Hz band and a 0.7-40 Hz "diagnostic" band, state carried
        self._vf_band = filters.band_pass(2, 2.0, 9.0, fs)
        self._wide_band = filters.band_pass(2, 0.7, min(40.0, 0.45 * fs), fs)
        self._af = rhythms.AfDetector(self._af_confirmed if af_confirm else None)
        # the last AF_CONFIRM_S of raw signal (int16 µV) for that second opinion
        self._recent: deque[np.ndarray] = deque()
        self._recent_n = 0
        self._p0 = int(round(rhythms.P_WIN_START_S * fs))  # pre-QRS (P-wave) window, samples before R
        self._p1 = int(round(rhythms.P_WIN_END_S * fs))
        self._vt = rhythms.VtDetector()
        self._vf = rhythms.VfDetector()
        self._pause = rhythms.PauseDetector()
        self._rate = rhythms.RateDetector()
        self._pvc = rhythms.PvcBurden()
        self._lead = rhythms.LeadOffTracker()
        self._beats = BeatRing(BEATS_KEPT)
        self._new_from: int | None = None  # beats handed out by drain_beats so far (None: never asked)
        self._frames: deque[tuple[int, int, FrameQuality]] = deque(maxlen=FRAMES_KEPT)
        self._recent_good: deque[bool] = deque(maxlen=10)
        self._seg_t0: float | None = None
        self._n = 0  # samples in the current segment
        self._qrs_levels: deque[float] = deque(maxlen=8)
        self._amp_levels: deque[float] = deque(maxlen=16)  # raw amplitude of recent normal beats
        self._beat_base: float | None = None  # raw level before the last beat (pre-QRS window)
        self._mains_basis: tuple[int, np.ndarray] | None = None  # (frame length, its 50/60 Hz DFT rows)
        self._slope_levels: deque[float] = deque(maxlen=16)  # their steepest slope (µV/sample)
        self._org: deque[tuple[float, float | None, float]] = deque(maxlen=12)  # (t, rr, corr with previous)
        self._summary_ready: dict | None = None
        self._start_new_segment(0.0)
        self._min_frame = max(1, int(round(MIN_FRAME_S * self.fs)))
        self._held: tuple | None = None  # (t0, sample arrays, count, lead_off) of short frames
        self._seg_t0 = None
        self._reset_minute()
        self.beat_count = 0

    # ------------------------------------------------------------ segments
    def _start_new_segment(self, t0: float) -> None:
        self._seg_t0 = t0
        self._n = 0
        self._spikes_at: tuple[int, list[float], float] | None = None  # (sample count, 4-s spikes, window start)
        self._det: QrsDetector | None = None
        self._det_off = 0
        self._bad_run = 0
        self._clean_qrs = 0  # QRSs the detector found in frames that were not noisy
        self._prev_noisy = False
        self._learnt_on_noise = False  # the detector, still establishing, has seen a noisy frame
        self._blind = 0  # ... and found no QRS in this many clean frames since
        self._last_beat_t: float | None = None
        self._last_centre_t: float | None = None  # the previous beat's QRS energy centre (AF's intervals)
        self._last_cls = "N"
        self._frames.clear()
        self._qrs_levels.clear()
        self._vf_zi = np.zeros((2, 2))  # filter states (sections x 2), set from the first sample
        self._wide_zi = np.zeros((2, 2))
        self._vf_primed = False
        self._wide_primed = False
        self._last_w = np.zeros(0)
        self._x_last: float | None = None
        self._org.clear()
        self._clf.reset()

    def _gap(self, t0: float) -> list[Transition]:
        t_end = self._t(self._n)
        out = self._vt.end(t_end)
        out += self._vtw.end()
        self._recent.clear()
        self._recent_n = 0
        self._wbeats.clear()
        self._wframes.clear()
        self._wclean.clear()
        out += self._pause.reset()
        self._af.reset_window()
        self._rate.reset()
        self._vf.reset()
        self._start_new_segment(t0)
        return out

    def _t(self, idx: int) -> float:
        return (self._seg_t0 or 0.0) + idx / self.fs

    # ------------------------------------------------------------ the seam
    def push(self, samples_uv: np.ndarray, *, t0_s: float | None = None, lead_off: bool = False) -> list[RhythmAlarm]:
        """Analyse one frame of µV samples; return the alarms raised or cleared by it.

        Frames shorter than ``MIN_FRAME_S`` are gathered (while contiguous and of the same lead-off
        state) into about a second before they are analysed: the per-frame quality tests judge a
        second of signal, and a quarter-second frame holding one QRS looks "noisy" (a clean record
        streamed in 0.25-s frames raised lead_off).  ``flush`` analyses what is held."""
        x = np.asarray(samples_uv, dtype=np.float64)
        if x.ndim != 1:
            x = x.reshape(-1)
        out: list[RhythmAlarm] = []
        held = self._held
        if held is not None:
            h_t0, h_parts, h_n, h_lead_off = held
            end = h_t0 + h_n / self.fs if h_t0 is not None else None
            if h_lead_off == lead_off and (t0_s is None or end is None or abs(float(t0_s) - end) <= JITTER_S):
                h_parts.append(x)
                self._held = (h_t0, h_parts, h_n + len(x), h_lead_off)
                return self.flush() if h_n + len(x) >= self._min_frame else out
            out += self.flush()
        if 0 < len(x) < self._min_frame:
            self._held = (float(t0_s) if t0_s is not None else None, [x], len(x), lead_off)
            return out
        return out + self._push_frame(x, t0_s=t0_s, lead_off=lead_off)

    def flush(self) -> list[RhythmAlarm]:
        """Analyse the samples held back from short frames (at the end of a stream)."""
        held, self._held = self._held, None
        if held is None:
            return []
        h_t0, h_parts, _, h_lead_off = held
        return self._push_frame(np.concatenate(h_parts), t0_s=h_t0, lead_off=h_lead_off)

    def _push_frame(self, x: np.ndarray, *, t0_s: float | None, lead_off: bool) -> list[RhythmAlarm]:
        trans: list[Transition] = []
        if self._seg_t0 is None:
            self._seg_t0 = float(t0_s) if t0_s is not None else 0.0
        elif t0_s is not None:
            delta = float(t0_s) - self._t(self._n)
            if abs(delta) > JITTER_S:
                trans += self._gap(float(t0_s))  # frames missing (or repeated): a new segment
            elif abs(delta) > 1.0 / self.fs:
                # the device's frame times jitter or its clock drifts: the samples are contiguous,
                # so analysis goes on, and the time base follows the device's clock smoothly (taking
                # each frame's jitter at face value would jitter the RR intervals)
                self._seg_t0 += CLOCK_FOLLOW * delta
        m = len(x)
        if m == 0:
            return self._alarms(trans)
        nan = ~np.isfinite(x)  # NaN (missing) or +-inf (a broken converter): no signal
        if nan.any():
            lead_off = True
            x = np.where(nan, 0.0, x)
        i0 = self._n
        self._write_ring(i0, x)
        self._keep_recent(x)
        self._n = i0 + m
        t_start, t_end = self._t(i0), self._t(self._n)

        # quality pre-check: unusable frames yield no beats; after a few the detector starts afresh
        kind = "lead_off" if lead_off else unusable_kind(x)
        new_idx: list[int] = []
        pending: list[tuple] = []
        if kind is not None:
            q = assess_frame(x, x[:0], 0.0, lead_off=lead_off, n_beats=0, kind=kind)
            self._bad_run += 1
            if self._bad_run >= RESET_AFTER_BAD_FRAMES:
                self._det = None
            elif self._det is not None:
                self._det.process(x)  # keep its sample count in step; its beats are dropped
            trans += self._vt.end(t_start)
            self._wide_primed = False
            self._x_last = None
        else:
            self._bad_run = 0
            if self._blind >= BLIND_FRAMES:
                self._det = None  # its levels were learnt on an artefact: start afresh on this frame
            if self._det is None:
                self._clean_qrs, self._learnt_on_noise, self._blind = 0, False, 0
                self._det = QrsDetector(self.fs)
                self._det_off = i0
                self._last_beat_t = self._last_centre_t = None
                trans += self._pause.reset()
            det = self._det
            new_idx = [k + self._det_off for k in det.process(x)]
            centres = [k + self._det_off for k in det.last_centres]
            bp = det.last_bp
            lvl = self._qrs_level()
            q = assess_frame(x, bp, lvl, lead_off=False, n_beats=len(new_idx), kind=kind)
            w = self._wide(x)
            # morphology first: whether the complexes recur decides between busy signal and noise
            for idx, centre in zip(new_idx, centres):
                b = self._morph(idx, centre)
                if b is not None:
                    pending.append(b)
            if q.noisy and self._organised(t_end):
                # energy everywhere, but as regular, recurring complexes (a fast wide-complex
                # rhythm such as VT): structured signal, not noise
                q.noisy = False
                q.sqi = 0.5
            art = self._artefact(x, w)
            if art:
                q.noisy = True
                q.artefact = art
                q.sqi = 0.0
        if kind is None and self._clean_qrs < ESTABLISH_QRS:
            if q.noisy:
                self._learnt_on_noise = True
            elif new_idx and not self._prev_noisy:
                # (QRSs in the frame right after a noisy one may be the noise's edge: not counted)
                self._clean_qrs += len(new_idx)
                self._blind = 0
            elif not new_idx and self._learnt_on_noise:
                self._blind += 1
        self._prev_noisy = kind is None and q.noisy
        self._frames.append((i0, self._n, q))
        self._recent_good.append(q.good)

        # beats
        for b in pending:
            trans += self._on_beat(b, q)

        # frame-level rhythm work: bad signal ends a ventricular run, and so does a busy frame
        # that added no ventricular beat to it
        if q.unusable or q.artefact is not None or (q.noisy and not any(b[2] == "V" for b in pending)):
            trans += self._vt.end(t_start)
        trans += self._vf_frame(x, q, t_end)
        trans += self._vt_window(q, t_end)
        quiet_heart = (
            q.good
            and not self._off_baseline(x, pending)
            and not (self._det is not None and self._det.recurring_small_qrs())
        )
        trans += self._pause.on_frame(t_end, quiet_heart, self._af.in_af, self._vf.active)
        trans += self._rate.on_frame(t_end, q.good, self._af.in_af or self._vt.active or self._vf.active)
        trans += self._lead.on_frame(t_start, t_end, not q.good and not self._vf.active)
        self._account(m / self.fs, q)
        if self.frame_log is not None:
            self.frame_log.append((m / self.fs, q))
        if self._min_s >= SUMMARY_S:
            trans += self._pvc.on_minute(t_end)
            self._summary_ready = self._make_summary()
            self._reset_minute()
        return self._alarms(trans)

    def minute_summary(self) -> dict | None:
        """The summary of the last complete minute of analysed signal, once; else None."""
        s, self._summary_ready = self._summary_ready, None
        return s

    @property
    def beats(self) -> list[tuple[float, str]]:
        """Recent detected beats (time s, class "N"/"V"), oldest first (bounded)."""
        return self._beats.items()

    def drain_beats(self) -> list[tuple[float, str]]:
        """Beats detected since the previous call (bounded to the last ``BEATS_KEPT``)."""
        total = self._beats.total
        since = total - (self._new_from if self._new_from is not None else 0)
        self._new_from = total
        return self._beats.items(since)

    @property
    def heart_rate_bpm(self) -> float | None:
        return self._rate.hr

    # ------------------------------------------------------------ internals
    def _keep_recent(self, x: np.ndarray) -> None:
        self._recent.append(np.clip(np.rint(x), -32767, 32767).astype(np.int16))
        self._recent_n += len(x)
        keep = rhythms.AF_CONFIRM_S * self.fs
        while len(self._recent) > 1 and self._recent_n - len(self._recent[0]) >= keep:
            self._recent_n -= len(self._recent.popleft())

    def _af_confirmed(self, t: float) -> bool:
        """The AF screening model's reading of the last 30 s (a second opinion, trained on other patients
        and another lead than the RR/P-wave rules were tuned on)."""
        from stream.ecg.screening import af_probability  # screening builds analysers itself

        n = int(rhythms.AF_CONFIRM_S * self.fs)
        if self._recent_n < 0.9 * n:
            return True  # not enough signal for a reading: the rules decide alone
        x = np.concatenate(self._recent)[-n:].astype(np.float64)
        return af_probability(x, self.fs) >= rhythms.AF_CONFIRM_P

    def _write_ring(self, i0: int, x: np.ndarray) -> None:
        m = len(x)
        if m >= self._cap:
            x, i0, m = x[-self._cap :], i0 + m - self._cap, self._cap
        s = i0 & self._mask
        e = s + m
        if e <= self._cap:
            self._ring[s:e] = x
        else:
            k = self._cap - s
            self._ring[s:] = x[:k]
            self._ring[: m - k] = x[k:]

    def _ring_slice(self, lo: int, hi: int) -> np.ndarray:
        lo = max(lo, self._n - self._cap, 0)
        hi = min(hi, self._n)
        if hi <= lo:
            return self._ring[:0]
        s, e = lo & self._mask, hi & self._mask
        if s < e:
            return self._ring[s:e]
        return np.concatenate((self._ring[s:], self._ring[:e]))

    def _qrs_level(self) -> float:
        if not self._qrs_levels:
            return 0.0
        s = sorted(self._qrs_levels)
        return s[len(s) // 2]

    def _frame_quality(self, idx: int, current: FrameQuality) -> FrameQuality:
        for a, b, q in reversed(self._frames):
            if a <= idx < b:
                return q
        return current

    def _morph(self, idx: int, centre: int) -> tuple | None:
        """Classify the beat at ring index ``idx`` (its QRS energy centre at ``centre``); None when it
        is dropped (a wide beat's second lobe)."""
        seg = self._ring_slice(idx - self._pre, idx + self._post)
        t = self._t(idx)
        rr = t - self._last_beat_t if self._last_beat_t is not None else None
        clf = self._clf
        cls = clf.classify(seg.astype(np.float64), rr)
        det = self._det
        if det is not None:
            v = det.bp_at(idx - self._det_off)
            if v > 0:
                self._qrs_levels.append(v)
        if rr is not None and (
            rr <= 0 or (rr < MIN_RR_AFTER_V_S and self._last_cls == "V" and (cls == "V" or not clf.last_match))
        ):
            return None
        self._last_cls = cls
        self._last_beat_t = t
        tc = self._t(centre)
        rr_c = tc - self._last_centre_t if self._last_centre_t is not None else None
        self._last_centre_t = tc
        if self.centre_log is not None:
            self.centre_log.append(tc)
        if self.feature_log is not None and clf.last_x is not None:
            self.feature_log.append((t, clf.last_x))
        if clf.last_match and cls == "N" and clf.last_amp > 0.0:
            self._amp_levels.append(clf.last_amp)
            self._slope_levels.append(clf.last_slope)
        self._org.append((t, rr, clf.prev_corr))
        amp_ratio = None
        if len(self._amp_levels) >= ARTEFACT_MIN_BEATS:
            ref = self._median(self._amp_levels)
            amp_ratio = clf.last_amp / ref if ref > 0.0 else None
        c, rel_w = clf.last_features
        return (
            idx,
            t,
            cls,
            rr,
            clf.last_match,
            clf.reliable,
            clf.prev_corr,
            amp_ratio,
            c,
            rel_w,
            clf.last_run_only,
            det.noise_ratio() if det is not None else 0.0,
            clf.last_p if clf.model is not None and clf.last_x is not None else None,
            float(clf.last_x[_WIDTH_MS]) if clf.last_x is not None else 0.0,
            rr_c,
        )

    def _organised(self, now: float) -> bool:
        """The last few complexes recur beat to beat at a regular rate (an organised rhythm)."""
        recent = [b for b in self._org if b[0] >= now - ORG_WINDOW_S]
        if len(recent) < ORG_MIN_BEATS:
            return False
        rrs = [b[1] for b in recent[1:] if b[1] is not None]
        if len(rrs) < len(recent) - 1:  # an interval is missing
            return False
        # every complex alike the one before; below 200 Hz one may fall a little short (at 125 Hz a
        # narrow QRS is 2-3 samples wide, and sampling jitter alone costs it a few hundredths)
        corrs = sorted(b[2] for b in recent[1:])
        if self.fs < ORG_LOW_FS:
            if corrs[0] < ORG_CORR_ONE or (len(corrs) > 1 and corrs[1] < ORG_CORR):
                return False
        elif corrs[0] < ORG_CORR:
            return False
        return max(rrs) <= ORG_RR_SPREAD * min(rrs)

    @staticmethod
    def _median(q: deque) -> float:
        s = sorted(q)
        return s[len(s) // 2] if s else 0.0

    def _artefact(self, x: np.ndarray, w: np.ndarray) -> str | None:
        """Non-cardiac content judged against this patient's own QRS complexes, or None.

        * ``step``: a jump steeper than any QRS of this patient (electrode pop, cable tug);
        * ``hf``: broadband high-frequency activity between the complexes (motion, muscle):
          the median |second difference| is large against the QRS amplitude;
        * ``amplitude``: the 0.7-40 Hz signal swings far beyond the QRS amplitude.
        """
        last = self._x_last
        self._x_last = float(x[-1])
        if len(self._amp_levels) < ARTEFACT_MIN_BEATS or len(x) < 3:
            return None
        amp = self._median(self._amp_levels)
        slope = self._median(self._slope_levels)
        d1 = x[1:] - x[:-1]
        step = float(np.abs(d1).max())
        if last is not None:
            step = max(step, abs(float(x[0]) - last))
        if step > STEP_RATIO * slope:
            return "step"
        d2 = np.abs(d1[1:] - d1[:-1])
        if fast_median(d2) > HF_RATIO * amp:
            return "hf"
        if float(w.max() - w.min()) > AMPLITUDE_RATIO * amp:
            return "amplitude"
        return None

    def _on_beat(self, b: tuple, current: FrameQuality) -> list[Transition]:
        (
            idx,
            t,
            cls,
            rr,
            match,
            reliable,
            prev_corr,
            amp_ratio,
            corr,
            rel_w,
            run_only,
            noise_ratio,
            p_v,
            width_ms,
            rr_c,
        ) = b
        fq = self._frame_quality(idx, current)
        # a clinical judgement needs good signal in this frame and most of the last 10 s
        good = fq.good and sum(self._recent_good) >= CONTEXT_GOOD * len(self._recent_good)
        beat = Beat(
            t,
            cls,
            good,
            rr,
            match,
            reliable,
            usable=not fq.unusable and fq.artefact is None,
            frame_good=fq.good,
            prev_corr=prev_corr,
            amp_ratio=amp_ratio,
            corr=corr,
            rel_w=rel_w,
            run_only=run_only,
            noise_ratio=noise_ratio,
            p_v=p_v,
            rr_centre=rr_c,
        )
        self._beats.append(t, cls)
        self._wbeats.append(
            WindowBeat(
                t,
                p_v if p_v is not None else float(cls == "V"),
                rel_w,
                width_ms,
                corr,
                prev_corr,
                amp_ratio if amp_ratio is not None else 1.0,
                reliable,
            )
        )
        self.beat_count += 1
        self._min_n += cls == "N"
        self._min_v += cls == "V"
        if beat.good and rr is not None:
            self._min_rr_sum += rr
            self._min_rr_n += 1
        self._pvc.on_beat(beat)
        self._rate.on_beat(beat)
        # the pre-QRS window: the P-wave evidence for AF, and the baseline a pause must keep
        seg = self._ring_slice(idx - self._p0, idx - self._p1)
        pw = None
        if self._af.wants_p_window(beat) and len(seg) == self._p0 - self._p1:
            pw = rhythms.detrend(seg.astype(np.float64))
        if len(seg):
            self._beat_base = fast_median(seg)
        out = self._af.on_beat(beat, pw)
        out += self._vt.on_beat(beat, self._sharp_interval, self._sharp_times)
        out += self._pause.on_beat(beat, self._af.in_af)
        return out

    def _off_baseline(self, x: np.ndarray, pending: list[tuple]) -> bool:
        """A frame without a beat that is no quiet baseline, though its QRS band is quiet.

        * far off the level before the last beat: 208 at 1383 s, the trace jumps 3 mV and decays
          for 5 s with no ECG in it (the reference annotates 8 beats there);
        * mains interference: an electrode off the skin without a lead-off flag shows 50/60 Hz
          hum and nothing else, which the 5-15 Hz QRS band does not see.
        """
        if pending or self._beat_base is None or len(self._amp_levels) < ARTEFACT_MIN_BEATS:
            return False
        amp = self._median(self._amp_levels)
        dev = max(float(x.max()) - self._beat_base, self._beat_base - float(x.min()))
        return dev > PAUSE_BASELINE_RATIO * amp or self._mains_uv(x) > MAINS_RATIO * amp

    def _mains_uv(self, x: np.ndarray) -> float:
        """Amplitude (µV) of the stronger of the 50 and 60 Hz components of the frame."""
        n = len(x)
        if self._mains_basis is None or self._mains_basis[0] != n:  # frames are nearly always one length
            self._mains_basis = (n, _mains_basis(n, self.fs))
        basis = self._mains_basis[1]
        if not len(basis):
            return 0.0
        xc = x - x.sum() / n
        return float(np.abs(basis @ xc).max()) * 2.0 / n

    def _wide(self, x: np.ndarray) -> np.ndarray:
        """The frame in the 0.7-40 Hz diagnostic band (state carried), kept for the VF features."""
        if not self._wide_primed:
            self._wide_zi = self._wide_band.zi() * x[0]
            self._wide_primed = True
        w, self._wide_zi = self._wide_band.run(x, self._wide_zi)
        self._last_w = w
        return w

    def _vf_frame(self, x: np.ndarray, q: FrameQuality, t_end: float) -> list[Transition]:
        if q.unusable:
            self._vf_primed = False
            return self._vf.on_frame(t_end, 0.0, 0.0, 0.0, 0, 0.0, usable=False)
        if not self._vf_primed:
            self._vf_zi = self._vf_band.zi() * x[0]
            self._vf_primed = True
        v, self._vf_zi = self._vf_band.run(x, self._vf_zi)
        w = self._last_w
        w2 = w * w
        return self._vf.on_frame(
            t_end,
            float(np.dot(v, v)),
            float(w2.sum()),
            float(np.dot(w2, w2)),
            len(x),
            float(w.max() - w.min()),
            usable=True,
            wide=w,
            organised=self._organised(t_end) and q.good,
            beats_beneath=self._beats_beneath,
        )

    def _vt_window(self, q: FrameQuality, t_end: float) -> list[Transition]:
        """Judge the last 4 s as a window (see :mod:`stream.ecg.vt_window`)."""
        if q.unusable:
            self._wframes.clear()
            self._wclean.clear()
            return self._vtw.on_window(t_end, None)
        self._wframes.append((self._last_w.size / self.fs, q.good, q.noisy, q.sqi))
        self._wclean.append(q.artefact is None)
        if len(self._vf.waves) < 4 or len(self._wframes) < 4 or (self._vt_model is None and self.window_log is None):
            return []
        if self.window_log is None and not self._vt_window_worth(t_end):
            return self._vtw.on_window(t_end, 0.0)
        if self.window_log is None and not self._vt_window_judgeable(t_end):
            return self._vtw.on_window(t_end, None)
        x = vt_window.window_features(
            t_end,
            self._wbeats,
            self._wframes,
            np.concatenate(self._vf.waves),
            self.fs,
            self._median(self._amp_levels) if self._amp_levels else 0.0,
        )
        if self.window_log is not None:
            self.window_log.append((t_end, x))
        if self._vt_model is None:
            return []
        p = self._vt_model.p_vt(x)
        if p >= vt_window.P_RAISE and self._beats_beneath():
            # the patient's own sharp QRS complexes go on steadily beneath: an oscillating artefact
            # (tremor) over the rhythm, as the beat-run and VF detectors judge it too
            p = 0.0
        return self._vtw.on_window(t_end, p, self._first_ventricular(t_end))

    def _first_ventricular(self, t_end: float) -> float | None:
        """The first beat of the window the beat model calls ventricular: where a run in it began."""
        for b in self._wbeats:
            if b.t > t_end - vt_window.WINDOW_S and b.p_v >= 0.5:
                return b.t
        return None

    def _vt_window_judgeable(self, t_end: float) -> bool:
        """The beat-run detector's own preconditions, for the window: no frame of it carries an
        artefact (a step, broadband noise, an excursion far beyond the patient's QRS), and most of
        its beats are reliable (their morphologies recur: noise "complexes" do not)."""
        if not all(self._wclean):
            return False
        bs = [b for b in self._wbeats if b.t > t_end - vt_window.WINDOW_S]
        return bool(bs) and 2 * sum(1 for b in bs if b.reliable) > len(bs)

    def _vt_window_worth(self, t_end: float) -> bool:
        """Whether the last 4 s could be VT at all: a beat the beat model gives some chance of being
        ventricular, or a fast rate.  Most windows of most patients are neither, and skipping them
        keeps the window model's cost to about a quarter of the windows (on the training records,
        22 of 841 VT windows fail this test, none of a whole episode)."""
        n = 0
        for b in reversed(self._wbeats):
            if b.t <= t_end - vt_window.WINDOW_S:
                break
            if b.p_v >= vt_window.WORTH_P_V:
                return True
            n += 1
        return n >= vt_window.WORTH_BEATS

    def _spikes(self) -> list[float]:
        """Sharp QRS spikes in the last 4 s (the VF detector's window), found once per frame: the
        VF check and every beat of a long run ask about the same window."""
        return self._spikes_and_start()[0]

    def _spikes_and_start(self) -> tuple[list[float], float]:
        """(``_spikes``, the window's start on the analyser's time base), cached per frame."""
        cached = self._spikes_at
        if cached is not None and cached[0] == self._n:
            return cached[1], cached[2]
        seg = self._ring_slice(self._n - int(VF_WINDOW_S * self.fs), self._n)
        spikes = sharp_spikes(seg.astype(np.float64), self.fs)
        t0 = self._t(self._n - len(seg))
        self._spikes_at = (self._n, spikes, t0)
        return spikes, t0

    def _beats_beneath(self) -> bool:
        """Sharp QRS complexes go on under the last 4 s, regular or not."""
        return beats_among(self._spikes())

    def _sharp_times(self) -> list[float]:
        """Times (s, the analyser's time base) of the sharp QRS spikes in the last 4 s."""
        spikes, t0 = self._spikes_and_start()
        return [t0 + s for s in spikes]

    def _sharp_interval(self) -> float | None:
        """The interval of sharp QRS complexes recurring steadily under the last 4 s, if they do."""
        return steady_interval(self._spikes())

    # --------------------------------------------------------- summaries
    def _reset_minute(self) -> None:
        self._min_s = 0.0
        self._min_n = 0
        self._min_v = 0
        self._min_rr_sum = 0.0
        self._min_rr_n = 0
        self._min_sqi = 0.0
        self._min_lead_off = 0.0
        self._min_af_s = 0.0
        self._min_vt_s = 0.0
        self._min_vf_s = 0.0
        self._min_asys_s = 0.0

    def _account(self, dur: float, q: FrameQuality) -> None:
        self._min_s += dur
        self._min_sqi += q.sqi * dur
        if q.unusable:
            self._min_lead_off += dur
        if self._af.in_af:
            self._min_af_s += dur
        if self._vt.active:
            self._min_vt_s += dur
        if self._vf.active:
            self._min_vf_s += dur
        if self._pause.asystole:
            self._min_asys_s += dur

    def _make_summary(self) -> dict:
        w = self._min_s
        quality = self._min_sqi / w if w else 0.0
        hr = 60.0 * self._min_rr_n / self._min_rr_sum if self._min_rr_n >= 3 and self._min_rr_sum > 0 else None
        if self._min_vf_s > 0:
            rhythm = "vf"
        elif self._min_vt_s > 0:
            rhythm = "vt"
        elif self._min_asys_s > 0:
            rhythm = "asystole"
        elif quality < 0.5 or hr is None:
            rhythm = "unknown"
        elif self._min_af_s >= 0.5 * w:
            rhythm = "af"
        elif hr < 60:
            rhythm = "sinus_bradycardia"
        elif hr > 100:
            rhythm = "sinus_tachycardia"
        else:
            rhythm = "sinus"
        return {
            "hr_bpm": round(hr, 1) if hr is not None else None,
            "rhythm": rhythm,
            "beats": {"normal": self._min_n, "ventricular": self._min_v},
            "quality": round(quality, 3),
            "lead_off_s": round(self._min_lead_off, 1),
            "window_s": round(w, 1),
        }

    # ------------------------------------------------------------ alarms
    def _merge_sources(self, trans: list[Transition]) -> list[Transition]:
        """One alarm per condition: ``vt`` has two sources (a beat run, the window model) and
        ``vt_sustained`` three (a 30-s run, the window model, VF); each is raised when the first
        source raises it and cleared when the last one clears."""
        out = []
        for tr in trans:
            if tr.condition not in self._vt_sources:
                out.append(tr)
                continue
            src = "vf" if tr.detail.get("vf") else "window" if tr.detail.get("window") else "run"
            owners = self._vt_sources[tr.condition]
            if tr.active:
                if not owners:
                    out.append(tr)
                    self._vt_raised_at[tr.condition] = tr.start_s
                owners.add(src)
            elif src in owners:
                owners.discard(src)
                if not owners:
                    # the clear names the start the alarm was raised with, whichever source ends last
                    start = self._vt_raised_at.pop(tr.condition, tr.start_s)
                    out.append(Transition(tr.condition, False, start, tr.end_s, tr.detail))
        return out

    def _alarms(self, trans: list[Transition]) -> list[RhythmAlarm]:
        if not trans:
            return []
        trans = self._merge_sources(trans)
        out = []
        for tr in trans:
            detail = dict(tr.detail)
            hr = self._rate.hr
            detail.setdefault("hr_bpm", round(hr, 1) if hr is not None else None)
            if tr.active:
                detail["quality"] = round(self._frames[-1][2].sqi, 3) if self._frames else None
                detail["strip"] = self._strip()
            out.append(
                RhythmAlarm(
                    tr.condition,
                    tr.active,
                    round(tr.start_s, 3),
                    round(tr.end_s, 3) if tr.end_s is not None else None,
                    detail,
                )
            )
        return out

    def _strip(self) -> dict:
        n = int(round(STRIP_S * self.fs))
        seg = self._ring_slice(self._n - n, self._n)
        start = self._t(self._n - len(seg))
        return {"fs": self.fs, "start_s": round(start, 3), "samples_uv": np.rint(seg).astype(np.int32).tolist()}
