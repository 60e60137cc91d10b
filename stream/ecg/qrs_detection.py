"""Streaming QRS detection (Pan-Tompkins / Hamilton-Tompkins family).

The detector is fed consecutive chunks of one lead (µV, any fs from 125 to
500 Hz) and carries every piece of state across chunks: the band-pass
filter's delay line, the tail needed by the derivative and the moving-window
integrator, the adaptive thresholds and the search-back candidates.

Per chunk the per-sample work is a handful of vectorised numpy calls
(``lfilter`` with carried ``zi``, an absolute derivative, a cumulative-sum
moving average and a local-maximum mask).  The absolute value (not the
square) keeps wide ventricular and aberrant beats above threshold.  Only the few local maxima of the
integrated signal (a handful per second) are looked at in Python, with the
classic decision rules:

* a candidate peak is kept only if it is the largest within ``MERGE_S``;
* it is a QRS when it exceeds ``THR1 = NPK + k (SPK - NPK)``, where SPK and
  NPK are medians of the last 8 signal / noise peak heights (Hamilton);
* nothing within ``REFRACTORY_S`` of the last QRS; between that and
  ``T_WAVE_S`` a candidate whose steepest slope is under half that of the last
  QRS is a T wave;
* search-back: when no QRS has been found for ``1.66 x`` the recent mean RR,
  the largest earlier candidate above ``THR1 / 2`` is taken as a QRS.

Beat times are sample indices on the detector's own counter (first sample
pushed = 0), located at the largest absolute band-passed deflection inside
the integrator window and corrected for the filter's group delay.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from stream.ecg import filters

BAND_HZ = (5.0, 15.0)
BAND_ORDER = 2
MWI_S = 0.15  # moving-window integrator width (Pan-Tompkins: 150 ms)
LOCATE_FLOOR = 0.1  # a QRS's energy centre (AF's intervals) counts band-passed energy above this share of the peak
MERGE_S = 0.18  # candidates closer than this are one peak (the larger wins)
REFRACTORY_S = 0.20  # no QRS within 200 ms of another
T_WAVE_S = 0.36  # between 200 and 360 ms a QRS must be as steep as half the last one
T_SLOPE_RATIO = 0.5  # ... steeper than this fraction of the last QRS
T_SHARP = 0.55  # ... and QRS-sharp: slope over band amplitude this share of recent QRSs' (a tall
# peaked T wave can be half as steep as a small QRS, but it is smooth: <= 0.5;
# every early beat of the dev records is >= 0.6)
T_NOISE_CAP = 0.5  # a refused T wave counts as a noise peak of at most this share of the QRS level
T_BIG = 1.5  # ... unless its integrated energy is this many times the threshold (a T wave's
T_BIG_SLOPE = 0.3  # is not) and it is this steep: an early wide PVC on the T wave (mitdb 210) ...
T_BIG_SHARP = 0.65  # ... and QRS-sharp (slope over band amplitude, this share of recent QRSs'): a T wave
# twice the QRS (chest leads, hyperkalaemia) is big and steep enough, but smooth
LEARN_S = 2.0  # initial threshold learning period
SEARCHBACK_RR = 1.66  # search back after 1.66 mean RR without a QRS
SB_FRACTION = 0.5  # search-back threshold as a fraction of the detection threshold
SB_SLOPE = 0.3  # a search-back QRS must be this steep relative to recent QRSs
THR_FRACTION = 0.3125  # Hamilton-Tompkins detection threshold coefficient
BUFFER_S = 8.0  # ring of band-passed / integrated signal kept for location and search-back
FEATURE_ABS = True  # |derivative| (True) or derivative squared (classic Pan-Tompkins)
DECAY_AFTER_S = 2.5  # without any QRS for this long the signal level estimate decays (each second;
# it halves at once while smaller QRS-sharp complexes recur: an amplitude drop)
SHARP_MIN = 0.85  # QRS-sharp: slope over band amplitude (a shape measure that does not scale
# with amplitude) this share of recent QRSs'; P waves and drifts are not.  Below
# the pre-decay level only QRS-sharp, recurring complexes are taken after a decay
SMALL_QRS_MIN = 0.08  # small QRSs after a drop: at least this share of the QRS level before it ...
SMALL_QRS_GAP_S = 0.33  # ... recurring no faster than 180/min (the baseline's ripples are faster)
SMALL_QRS_RECENT = 4  # ... all of them since the last QRS, or at least this many latest ones ...
SMALL_QRS_HEIGHTS = 1.5  # ... of a steady height (max / min)
SMALL_QRS_PACE = (0.7, 1.4)  # ... at the heart's own pace before the drop (median interval over the median
# RR): an electrode that moves does not change the heart rate; random artefact
# spikes over a stopped heart rarely keep it (the missed asystoles of the probe)
FAST_RR_S = 0.60  # > 100 bpm: an interval that doubles at this rate hides a beat ...
DOUBLED_RR = (1.6, 2.4)  # ... when it is this many times the last RR ...
MID_GAP = (0.4, 0.6)  # ... and a supra-threshold peak the T-wave test rejected lies mid-way


def _sharp_of(slope: float, amp: float) -> float:
    """QRS sharpness: steepest band-passed slope over band-passed amplitude (amplitude-free)."""
    return slope / amp if amp > 0.0 else 0.0


class QrsDetector:
    """Incremental QRS detector for one lead.

    ``process(chunk)`` returns the sample indices (on the detector's counter)
    of the QRS complexes it has become sure of; decisions lag the signal by at
    most about ``MERGE_S`` plus the integrator width, or by the search-back
    delay for low-amplitude beats.
    """

    def __init__(self, fs: float) -> None:
        if not 50.0 <= fs <= 2000.0:
            raise ValueError(f"unsupported sampling rate {fs} Hz")
        self.fs = float(fs)
        hi = min(BAND_HZ[1], 0.45 * fs)
        self._band = filters.band_pass(BAND_ORDER, BAND_HZ[0], hi, fs)
        self._zi = np.zeros((len(self._band.sos), 2))
        # group delay of the band-pass near the QRS energy peak (~10 Hz), in samples
        self._gd = int(round(filters.group_delay(self._band.sos, 10.0, fs)))
        self._w = max(2, int(round(MWI_S * fs)))
        self._merge = int(round(MERGE_S * fs))
        self._refr = int(round(REFRACTORY_S * fs))
        self._twave = int(round(T_WAVE_S * fs))
        self._learn = int(round(LEARN_S * fs))
        self._decay_after = int(round(DECAY_AFTER_S * fs))
        self._slope_half = max(1, int(round(0.06 * fs)))
        self._arange = np.arange(self._w + self._slope_half + 1, dtype=np.float64)  # _locate's sample offsets
        cap = 1
        while cap < BUFFER_S * fs:
            cap *= 2
        self._cap = cap
        self._mask = cap - 1
        self._bp = np.zeros(cap, dtype=np.float32)  # band-passed signal ring (float32: half the memory per patient)
        self._mwi = np.zeros(cap, dtype=np.float32)  # integrated feature ring
        self._bp_tail = np.zeros(2)  # last two band-passed samples (derivative)
        self._sq_tail = np.zeros(self._w)  # last w squared-derivative samples (integrator)
        self._n = 0  # samples consumed so far
        self._prev_mwi_last = 0.0  # last integrated value (local-max test across chunks)
        self._prev_mwi_rising = False
        self._learning = True
        self._pending: tuple[int, float] | None = None  # candidate waiting for the merge window
        self._held: list[tuple[int, float]] = []  # candidates seen while learning
        self._spk: deque[float] = deque(maxlen=8)
        self._npk: deque[float] = deque(maxlen=8)
        self._rr: deque[int] = deque(maxlen=8)
        self._slopes: deque[float] = deque(maxlen=8)
        self._sharp: deque[float] = deque(maxlen=8)  # slope / band amplitude of recent QRSs
        self._decayed = False  # the signal level was decayed since the last QRS
        self._thr_undecayed = 0.0  # the detection threshold before that decay
        self._spk_undecayed = 0.0  # and the QRS level
        self._small_qrs_gap = int(round(SMALL_QRS_GAP_S * fs))
        self._rejects: deque[tuple[int, float]] = deque(maxlen=32)  # (index, height) of refused candidates
        self._thr1 = 0.0
        self._last_qrs = -(10**9)  # integrator-peak index of the last QRS
        self._last_slope = 0.0
        self._since: list[tuple[int, float]] = []  # noise candidates since the last QRS
        self._out: list[int] = []
        self.last_centres: list[int] = []
        self._last_decay = 0
        self.accepted = 0  # QRS complexes accepted since this detector started
        self.last_bp = np.zeros(0)

    # ------------------------------------------------------------------ feed
    def process(self, x: np.ndarray) -> list[int]:
        """Feed one chunk of samples (µV); return newly confirmed QRS sample indices.

        ``last_centres`` holds, in the same order, each QRS's band-passed energy centre (``_locate``).
        """
        m = len(x)
        if m == 0:
            return []
        if self._n == 0:
            # start the filter in its steady state for the first sample's DC level
            self._zi = self._band.zi() * float(x[0])
        bp, self._zi = self._band.run(np.asarray(x, dtype=np.float64), self._zi)
        self.last_bp = bp
        ext = np.concatenate((self._bp_tail, bp))
        d = ext[2:] - ext[:-2]
        self._bp_tail = ext[-2:]
        sq = np.abs(d) if FEATURE_ABS else d * d
        csum = np.cumsum(np.concatenate((self._sq_tail, sq)))
        w = self._w
        # mwi[i] = sum of the last w squared-derivative samples ending at new sample i
        mwi = (csum[w:] - csum[:-w]) / w
        tail = np.concatenate((self._sq_tail, sq))
        self._sq_tail = tail[-w:]
        n0 = self._n
        self._write(n0, bp, mwi)
        self._n = n0 + m

        # local maxima of the integrated signal: rising into i, not rising out of i.
        # Index i-1 of the previous chunk is resolved now that its successor is known.
        prev = np.concatenate(((self._prev_mwi_last,), mwi))
        rising = prev[1:] > prev[:-1]  # rising[i]: mwi[i] > mwi[i-1]
        peak = np.empty(m, dtype=bool)
        peak[:-1] = rising[:-1] & ~rising[1:]
        peak[-1] = False
        cands = np.flatnonzero(peak)
        first_is_peak = self._prev_mwi_rising and not rising[0]
        self._prev_mwi_last = float(mwi[-1])
        self._prev_mwi_rising = bool(rising[-1])
        out = self._out = []
        self.last_centres = []
        if first_is_peak and n0 > 0:
            self._candidate(n0 - 1, float(self._mwi[(n0 - 1) & self._mask]))
        if len(cands):
            vals = mwi[cands]
            floor = 0.05 * self._thr1 if not self._learning else 0.0
            for i, v in zip(cands.tolist(), vals.tolist()):
                if v > floor:
                    self._candidate(n0 + i, v)
        self._tick()
        return out

    def _write(self, n0: int, bp: np.ndarray, mwi: np.ndarray) -> None:
        m = len(bp)
        if m >= self._cap:
            bp, mwi, n0 = bp[-self._cap :], mwi[-self._cap :], n0 + m - self._cap
            m = self._cap
        s = n0 & self._mask
        e = s + m
        if e <= self._cap:
            self._bp[s:e] = bp
            self._mwi[s:e] = mwi
        else:
            k = self._cap - s
            self._bp[s:] = bp[:k]
            self._bp[: m - k] = bp[k:]
            self._mwi[s:] = mwi[:k]
            self._mwi[: m - k] = mwi[k:]

    def bp_at(self, i: int) -> float:
        """|band-passed signal| at the QRS located at sample ``i`` (0 if no longer held)."""
        i += self._gd
        if i < 0 or i >= self._n or i <= self._n - self._cap:
            return 0.0
        return abs(float(self._bp[i & self._mask]))

    def _ring(self, buf: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """buf samples [lo, hi) by absolute index (clipped to what the ring holds)."""
        lo = max(lo, self._n - self._cap + 1, 0)
        if hi <= lo:
            return buf[:0]
        s, e = lo & self._mask, hi & self._mask
        if s < e:
            return buf[s:e]
        return np.concatenate((buf[s:], buf[:e]))

    # ------------------------------------------------------------ decisions
    def _candidate(self, i: int, v: float) -> None:
        p = self._pending
        if p is not None:
            if i - p[0] < self._merge:
                if v > p[1]:
                    self._pending = (i, v)
                return
            self._finalise(p[0], p[1])
        self._pending = (i, v)

    def _tick(self) -> None:
        """End-of-chunk housekeeping: flush a pending peak, learn, search back, decay."""
        p = self._pending
        if p is not None and self._n - 1 - p[0] >= self._merge:
            self._pending = None
            self._finalise(p[0], p[1])
        if self._learning:
            if self._n >= self._learn:
                self._end_learning()
            return
        self._search_back(self._n)
        # a long stretch without any QRS: let the signal level decay towards the
        # noise level (once per second), so a drop in amplitude is followed
        since = self._n - max(self._last_qrs, self._last_decay)
        if since > self._decay_after and self._spk:
            self._last_decay = self._n
            if not self._decayed:
                self._thr_undecayed = self._thr1
                self._spk_undecayed = self._median(self._spk)
            self._decayed = True
            if self.recurring_small_qrs():
                # smaller QRS complexes keep coming (electrode moved, posture): halve the whole
                # level history, so they are followed within seconds
                self._spk = deque((0.5 * v for v in self._spk), maxlen=self._spk.maxlen)
                self._slopes = deque((0.5 * v for v in self._slopes), maxlen=self._slopes.maxlen)
            else:
                self._spk.append(0.5 * self._median(self._spk))
            self._update_thr()

    def _end_learning(self) -> None:
        feat = self._ring(self._mwi, 0, self._n)
        top = float(np.max(feat)) if len(feat) else 0.0
        if top <= 0.0:
            return  # flat so far: keep learning
        self._learning = False
        self._spk.extend([0.5 * top] * 4)
        self._npk.extend([0.5 * float(np.mean(feat))] * 4)
        self._update_thr()
        held, self._held = self._held, []
        for i, v in held:
            self._decide(i, v)
        self._search_back(self._n)

    def _finalise(self, i: int, v: float) -> None:
        if self._learning:
            self._held.append((i, v))
            if len(self._held) > 64:
                del self._held[:-64]
            return
        self._search_back(i)
        self._decide(i, v)

    @staticmethod
    def _median(q: deque[float]) -> float:
        s = sorted(q)
        k = len(s)
        return s[k // 2] if k % 2 else 0.5 * (s[k // 2 - 1] + s[k // 2])

    def noise_ratio(self) -> float:
        """Median noise-peak height over median QRS-peak height (0..1): how close what the
        detector rejects comes to what it accepts.  Clean ECG leaves small P/T-wave peaks;
        muscle or motion noise in the QRS band pushes it up."""
        if not self._spk or not self._npk:
            return 0.0
        spk = self._median(self._spk)
        return min(1.0, self._median(self._npk) / spk) if spk > 0 else 0.0

    def _update_thr(self) -> None:
        spk = self._median(self._spk) if self._spk else 0.0
        npk = self._median(self._npk) if self._npk else 0.0
        if spk < npk:
            spk = npk
        self._thr1 = npk + THR_FRACTION * (spk - npk)

    def _slope_and_amp(self, i: int) -> tuple[float, float]:
        """Steepest band-passed slope and largest band-passed amplitude of the QRS ending at ``i``."""
        seg = self._ring(self._bp, i - self._w - self._slope_half, i + 1)
        if len(seg) < 3:
            return 0.0, 0.0
        return float(np.abs(seg[1:] - seg[:-1]).max()), float(np.abs(seg).max())

    def _slope(self, i: int) -> float:
        return self._slope_and_amp(i)[0]

    def _sharpness(self, i: int) -> float:
        return _sharp_of(*self._slope_and_amp(i))

    def recurring_small_qrs(self) -> bool:
        """Since the last QRS, >= 3 QRS-sharp rejected candidates stand out at a steady, physiological
        interval: the QRS amplitude dropped (electrode moved, posture) and the threshold has not
        followed yet; the heart has not stopped.  P waves are not that sharp, and the baseline's
        ripples are smaller and faster."""
        if self._last_qrs < 0 or not self._spk:
            return False
        level = self._spk_undecayed if self._decayed else self._median(self._spk)
        floor = SMALL_QRS_MIN * level
        cands = [c for c in self._rejects if c[0] - self._last_qrs >= self._twave and c[1] >= floor]
        if len(cands) < 3:
            return False
        cands = [c for c in cands if self._is_sharp(c[0])]  # (sharpness only for the few that stand out)
        if len(cands) < 3:
            return False
        cand_ts = [c[0] for c in cands]
        if self._steady(cand_ts) and self._at_pace(cand_ts):
            return True
        # an artefact right after the last QRS (a step, its decay) leaves a few irregular
        # candidates before the small beats show: the latest ones, recurring steadily up to now
        # at a steady height, are as good a sign (four of them: random noise peaks rarely do all that)
        last = cands[-SMALL_QRS_RECENT:]
        ts = [c[0] for c in last]
        heights = [c[1] for c in last]
        return (
            len(last) == SMALL_QRS_RECENT
            and self._steady(ts)
            and self._at_pace(ts)
            and max(heights) <= SMALL_QRS_HEIGHTS * min(heights)
            and self._n - ts[-1] <= 2 * (ts[-1] - ts[-2])
        )

    def _steady(self, ts: list[int]) -> bool:
        gaps = [b - a for a, b in zip(ts, ts[1:])]
        return min(gaps) >= self._small_qrs_gap and max(gaps) <= 1.5 * min(gaps)

    def _at_pace(self, ts: list[int]) -> bool:
        """The candidates recur at about the heart's pace before the drop (``SMALL_QRS_PACE``)."""
        if not self._rr:
            return True
        rr = sorted(self._rr)[len(self._rr) // 2]
        gaps = sorted(b - a for a, b in zip(ts, ts[1:]))
        gap = gaps[len(gaps) // 2]
        return SMALL_QRS_PACE[0] * rr <= gap <= SMALL_QRS_PACE[1] * rr

    def _is_sharp(self, i: int) -> bool:
        """As sharp as this patient's recent QRS complexes (whatever its amplitude)."""
        return bool(self._sharp) and self._sharpness(i) >= SHARP_MIN * self._median(self._sharp)

    def _sharp_enough(self, i: int, v: float) -> bool:
        """After a decay, a complex below the level that held before it counts only when it is as
        sharp as this patient's QRSs and such complexes recur at a steady interval (a lone T or P
        wave in a real pause does not); a full-size QRS always counts."""
        if not (self._decayed and self._sharp) or v >= self._thr_undecayed:
            return True
        return self._is_sharp(i) and self.recurring_small_qrs()

    def _decide(self, i: int, v: float) -> None:
        gap = i - self._last_qrs
        if gap < self._refr:
            return
        if v > self._thr1:
            if gap < self._twave:
                s, amp = self._slope_and_amp(i)
                sharp = _sharp_of(s, amp)
                ref = self._median(self._sharp) if self._sharp else 0.0
                if sharp < T_SHARP * ref or (
                    s < T_SLOPE_RATIO * self._last_slope
                    and not (
                        v >= T_BIG * self._thr1 and s >= T_BIG_SLOPE * self._last_slope and sharp >= T_BIG_SHARP * ref
                    )
                ):
                    # a T wave: it counts as noise, but no higher than half the QRS level -- a T
                    # wave bigger than the QRS would otherwise lift the threshold onto the QRSs
                    self._noise(i, v, level=min(v, T_NOISE_CAP * self._median(self._spk)) if self._spk else v)
                    return
            if not self._sharp_enough(i, v):
                self._noise(i, v)
                return
            self._recover_mid(i)
            self._accept(i, v, searchback=False)
        else:
            self._noise(i, v)

    def _recover_mid(self, i: int) -> None:
        """At a fast rate, an interval that doubles with a supra-threshold peak mid-way (rejected
        only by the T-wave test) holds a beat: an early ventricular beat on the T wave of the one
        before it (R on T) inside a fast run.  Accept it before the QRS at ``i``."""
        if not self._rr or self._last_qrs < 0:
            return
        last_rr = self._rr[-1]
        gap = i - self._last_qrs
        if last_rr >= FAST_RR_S * self.fs or not DOUBLED_RR[0] * last_rr <= gap <= DOUBLED_RR[1] * last_rr:
            return
        lo = self._last_qrs + MID_GAP[0] * gap
        hi = self._last_qrs + MID_GAP[1] * gap
        best = None
        for c in self._since:
            if lo <= c[0] <= hi and c[1] > self._thr1 and (best is None or c[1] > best[1]):
                best = c
        if best is None:
            return
        if self._slopes and self._slope(best[0]) < SB_SLOPE * self._median(self._slopes):
            return
        self._accept(best[0], best[1], searchback=True)

    def _noise(self, i: int, v: float, level: float | None = None) -> None:
        self._rejects.append((i, v))
        self._npk.append(v if level is None else level)
        self._update_thr()
        self._since.append((i, v))
        if len(self._since) > 64:
            del self._since[:-64]

    def _accept(self, i: int, v: float, *, searchback: bool) -> None:
        self.accepted += 1
        early = False
        if self._last_qrs > -(10**8):
            rr = i - self._last_qrs
            early = rr < self._twave
            if rr < 3 * self.fs:
                self._rr.append(rr)
        self._last_qrs = i
        slope, amp = self._slope_and_amp(i)
        self._last_slope = slope
        self._slopes.append(slope)
        if not early or not self._sharp:
            # the QRS-sharpness reference: beats in the T-wave window stay out of it, so that a
            # T wave that once passed cannot lower the bar for the next ones
            self._sharp.append(_sharp_of(slope, amp))
        self._decayed = False
        self._spk.append(v)
        self._update_thr()
        self._since = [c for c in self._since if c[0] > i]
        k, c = self._locate(i)
        self._out.append(k)
        self.last_centres.append(c)

    def _search_back(self, now: int) -> None:
        """Take the best sub-threshold candidate when a QRS is overdue at ``now``."""
        kept: set[int] = set()  # refused now, but QRS-shaped: kept for after a level decay
        earliest = self._decayed  # after an amplitude drop take them in order, so none is skipped
        while True:
            if not self._rr or self._last_qrs < 0:
                return
            mean_rr = sum(self._rr) / len(self._rr)
            if now - self._last_qrs <= SEARCHBACK_RR * mean_rr:
                return
            thr2 = SB_FRACTION * self._thr1
            # in order after a drop, the beats keep the rhythm: nothing closer than 0.6 RR (the
            # last QRS's T wave would be the "earliest" candidate otherwise)
            min_gap = max(self._twave, 0.6 * mean_rr) if earliest else self._twave
            best = None
            for c in self._since:
                if c[0] - self._last_qrs >= min_gap and c[1] > thr2 and c[0] < now and c[0] not in kept:
                    if best is None or c[1] > best[1]:
                        best = c
                    if earliest:
                        break
            if best is None:
                return
            if (
                self._slopes and self._slope(best[0]) < SB_SLOPE * self._median(self._slopes)
            ) or not self._sharp_enough(best[0], best[1]):
                # too gentle for a QRS now; a T or P wave is dropped, a QRS-sharp complex (a small
                # QRS after an amplitude drop) stays a candidate for when the level has decayed
                if self._is_sharp(best[0]):
                    kept.add(best[0])
                else:
                    self._since.remove(best)
                continue
            self._accept(best[0], best[1], searchback=True)

    def _locate(self, i: int) -> tuple[int, int]:
        """Samples of the QRS whose integrator peak is at ``i``: its largest |band-pass| (the
        fiducial), and the centre of its band-passed energy above a tenth of the peak.

        On a wide biphasic complex (a paced beat, bundle branch block) the two lobes are nearly
        equal and the largest sample jumps between them from beat to beat (100-130 ms on MIT-BIH
        102 and 104), which makes a regular paced rhythm look irregular; the energy centre moves
        smoothly instead, so the AF detector measures intervals between centres (docs/ecg.md).
        """
        lo = i - self._w - self._slope_half
        seg = self._ring(self._bp, lo, i + 1)
        if len(seg) == 0:
            k = max(0, i - self._w // 2 - self._gd)
            return k, k
        lo = i + 1 - len(seg)
        k = int(np.argmax(np.abs(seg)))
        e = seg.astype(np.float64)
        e *= e
        e -= LOCATE_FLOOR * float(e[k])
        np.maximum(e, 0.0, out=e)
        total = float(e.sum())
        c = int(round(float(np.dot(e, self._arange[: len(e)])) / total)) if total > 0.0 else k
        return max(0, lo + k - self._gd), max(0, lo + c - self._gd)
