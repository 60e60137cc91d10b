"""Rhythm judgement from classified beats and per-second quality.

Each detector below is a small state machine fed in time order with beats
(time in s on the analyser's time base, class "N"/"V", whether the signal
around it was good) and with per-frame quality; each returns the alarm
transitions it caused as :class:`Transition` tuples, which the analyser turns
into ``RhythmAlarm`` objects with evidence.

Thresholds follow ``docs/spec/clinical-rules.md`` (§ECG, §Routing); the gating rules
follow its §ECG signal (no rhythm alarm from an unusable or noisy signal; persistence before VT,
pause and asystole).  A ventricular run is judged on its own complexes: in
frames that are busy but usable it counts only when its complexes recur
(``VtDetector``).  AF combines RR irregularity with P-wave evidence
(``PWaveCoherence``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from stream.ecg.signal_quality import SPIKE_GAP_S

# --- AF (RR irregularity over a sliding window of beats, ectopics excluded)
AF_WINDOW = 32  # beats in the sliding window
AF_MIN_NN = 14  # usable normal-to-normal intervals needed in the window
AF_RR_LOW = 0.6  # NN intervals outside [0.6, 1.6] x median are ectopy or pauses
AF_RR_HIGH = 1.6
AF_ON = 0.075  # irregularity (median successive NN difference / median NN) to enter AF
AF_OFF = 0.055  # ... and to leave it (hysteresis)
AF_MIN_S = 30.0  # ESC: AF lasting at least 30 s on a single-lead strip
AF_RVR_BPM = 110.0  # RACE II lenient rate target: a mean rate above it for 5 min is RVR ...
AF_RVR_S = 300.0
AF_RVR_FAST_BPM = 150.0  # ... and so is >= 150 for 1 min (tachycardia's county rule, which AF suppresses);
AF_RVR_FAST_S = 60.0  # in between, the time needed falls linearly with the rate (140/min: 2 min), so
AF_RVR_STEP_S = 15.0  # AF at 149/min is not left unreported for 5 min; windows of 60, 75, ... 300 s
AF_RVR_EVERY_S = 5.0  # judged at most this often: the windows are minutes long
# Before ``af`` is raised, the last 30 s are read as a strip by the AF screening model
# (stream/ecg/screening.py, trained on the CinC 2017 strips, never on MIT-BIH): below this P(af) the
# alarm waits and is asked again 30 s later.  0.02 keeps 97 % of the 2017 AF strips (out-of-fold),
# chosen there before it was run on any monitoring record.
AF_CONFIRM_P = 0.02
AF_CONFIRM_S = 30.0
AF_RVR_COVER = 0.5  # a window's rate counts when its sound RR intervals cover this share of it
AF_PAUSE_S = 5.0  # pause threshold in AF
# P-wave evidence: the pre-QRS window [R - 0.30 s, R - 0.12 s] of normal beats (PR 0.12-0.30 s).
# Its coherence over the last beats = energy of their average / mean energy of each: a P wave
# that recurs before every QRS averages up (sinus, ectopic atrial or junctional rhythm with
# visible P), fibrillatory baseline averages out (independent windows give ~1/n).
P_WIN_START_S = 0.30
P_WIN_END_S = 0.12
P_WINDOWS = 16  # windows averaged ...
P_MIN_WINDOWS = 8  # ... at least this many (younger than P_MAX_AGE_S) for a verdict
P_MAX_AGE_S = 60.0
P_MIN_RR_S = P_WIN_START_S + 0.35  # shorter RR: the window would hold the previous beat's T wave (QT ~0.35 s
# at these rates), which recurs like a P wave (fast AF read as "P present")
P_ABSENT = 0.12  # coherence below this (2x that of independent windows): no P wave
P_PRESENT = 0.50  # at or above this: a P wave precedes the QRS complexes: not AF
AF_ON_RR_ONLY = 0.12  # irregularity that enters AF without P-wave absence (P evidence unclear)
AF_OFF_NO_P = 0.03  # with no P wave, AF ends only when the rhythm is this regular
# --- VT
VT_BEATS = 3
VT_RATE_BPM = 100.0
VT_SUSTAINED_S = 30.0
VT_SAME_CORR = 0.90  # three successive complexes this alike: a monomorphic run, not noise
VT_MIN_AMP = 0.30  # a "ventricular" complex below this share of the normal QRS amplitude is not one
VT_WIDE_REL = 1.25  # a complex this many times the normal width (the classifier's WIDE_REL) ...
VT_UNLIKE_CORR = 0.30  # ... or correlating below this with the normal QRS is clearly not a normal beat;
VT_ALIKE_CORR = 0.70  # three such complexes, each this alike the one before, are a run, not noise
VT_BENEATH_DIFF = 0.25  # sharp QRSs recurring beneath at an interval this different from the run's: artefact
VT_BENEATH_SPAN_S = 4.0  # ... judged once the run covers the whole window the check looks at
VT_CADENCE_TOL = 0.12  # at its start, a run is an artefact when every sharp QRS of the last 4 s keeps one
# cadence (intervals within this share of their median) and one stands where due,
# within this share, all through the run's span: the patient's beats go on beneath
VT_MODEL_SURE = 0.9  # three recurring complexes the beat model gives this P(V) are a run
VT_MODEL_ALONE = 0.99  # ... and three wide ones at this P(V) are one even when they differ (multiform)
VT_SURE_NOISE = 0.20  # the model's word counts only while the QRS detector's rejected peaks stay this small
VT_GOOD_NOISE = 0.10  # good frames vouch for a triplet only while rejected peaks stay this small,
# unless none of its complexes resembles the normal QRS (< VT_UNLIKE_CORR)
VT_BUSY_NORMAL_CORR = 0.60  # in busy frames, a complex this like the normal QRS is a distorted normal beat
# --- pauses and asystole
PAUSE_S = 3.0
ASYSTOLE_S = 5.0
PAUSE_HOLD_S = 60.0  # a pause alarm stays open this long after the last pause
# --- rates (docs/spec/clinical-rules.md §Routing)
BRADY_BPM = 40.0
BRADY_S = 60.0
TACHY_BPM = 100.0  # the two anchors of the routing table: > 100 for 10 min (village) ...
TACHY_S = 600.0
TACHY_FAST_BPM = 150.0  # ... and >= 150 for 1 min (county).  In between, the time needed falls
TACHY_FAST_S = 60.0  # linearly with the rate (as for AF-RVR): 140/min for 2.8 min, 120/min for
TACHY_STEP_BPM = 10.0  # 6.4 min (village); one clock per 10/min, so 149/min is not silent for 10 min
RATE_WINDOW_S = 10.0
SUSTAIN_CONTRARY = 0.10  # a rate condition "for N s" holds through this share of contrary time (brief dips),
SUSTAIN_UNKNOWN_S = 30.0  # through unknown-rate stretches (artefact, motion) up to this long,
SUSTAIN_COVERAGE = 0.5  # as long as the rate was known for this share of the elapsed time
# --- PVC burden
PVC_PER_H = 30.0
PVC_BURDEN = 0.10
PVC_MIN_MINUTES = 10  # the per-hour rate is extrapolated from at least 10 minutes ...
PVC_MIN_BEATS = 300  # ... the burden from at least this many beats of good, reliable signal
# --- ventricular flutter / fibrillation (per-frame features over the last 4 s)
VF_BAND_SHARE = 0.80  # share of 0.7-40 Hz energy in 2-9 Hz
VF_KURTOSIS_MAX = 3.5  # a sine-like, non-peaky signal
VF_MIN_UV = 150.0  # and not a quiet baseline
VF_LEAKAGE_MAX = 0.5  # VF-filter leakage below this is flutter/fibrillation even when beats recur
VF_PERSIST_S = 6.0
VF_CLEAR_S = 4.0
# --- technical
LEAD_OFF_RAISE_S = 300.0  # clinical-rules.md §Routing: lead-off for > 5 min
LEAD_OFF_CLEAR_S = 10.0


@dataclass(slots=True)
class Transition:
    condition: str
    active: bool
    start_s: float
    end_s: float | None
    detail: dict = field(default_factory=dict)


@dataclass(slots=True)
class Beat:
    t: float
    cls: str
    good: bool
    rr: float | None  # seconds since the previous beat of the same segment
    match: bool = True  # morphology matches the patient's normal template
    reliable: bool = True  # recent beats have recurring morphologies (not noise): V labels can be trusted
    usable: bool | None = None  # its frame is usable and free of artefact, though maybe busy (None: = good)
    frame_good: bool | None = None  # its own frame is good, whatever the 10 s around it (None: = good)
    prev_corr: float = 0.0  # correlation of its complex with the previous beat's
    amp_ratio: float | None = None  # its amplitude over the patient's normal QRS amplitude (None: unknown)
    corr: float = 1.0  # correlation with the normal template
    rel_w: float = 1.0  # effective width over the normal template's width
    run_only: bool = False  # template-shaped, V only as the continuation of a fast V run
    noise_ratio: float = 0.0  # the QRS detector's noise-peak / QRS-peak level when it was found
    p_v: float | None = None  # the learned beat model's P(ventricular) (None: rules alone)
    # seconds since the previous beat's QRS energy centre: steady where the fiducial (``t``) jumps
    # between the lobes of a wide biphasic complex (paced beats); None: as ``rr``
    rr_centre: float | None = None


class PWaveCoherence:
    """How consistently a P wave precedes the QRS complexes (0..1) over the last normal beats."""

    def __init__(self) -> None:
        self.windows: deque[tuple[float, np.ndarray]] = deque(maxlen=P_WINDOWS)
        self.value: float | None = None

    def reset(self) -> None:
        self.windows.clear()
        self.value = None

    def add(self, t: float, w: np.ndarray | None) -> None:
        """The detrended pre-QRS window of a normal-to-normal beat at time ``t`` (None: none)."""
        if w is not None:
            self.windows.append((t, w))
        while self.windows and self.windows[0][0] < t - P_MAX_AGE_S:
            self.windows.popleft()
        if len(self.windows) < P_MIN_WINDOWS:
            self.value = None
            return
        a = np.array([x[1] for x in self.windows])
        m = a.mean(axis=0)
        e = float(np.einsum("ij,ij->", a, a)) / len(a)
        self.value = float(np.dot(m, m)) / e if e > 0.0 else None


def detrend(w: np.ndarray) -> np.ndarray:
    """``w`` minus its least-squares line (baseline wander removed)."""
    n = len(w)
    r = np.arange(n) - (n - 1) / 2.0
    w = w - w.sum() / n
    rr = float(np.dot(r, r))
    return w - r * (float(np.dot(w, r)) / rr) if rr > 0 else w


def _median_lerp(v: list[float]) -> float:
    """``np.percentile(v, 50)`` of a sorted list, with NumPy's linear-interpolation arithmetic."""
    n = len(v)
    if n % 2:
        return v[n // 2]
    a, b = v[n // 2 - 1], v[n // 2]
    return b - (b - a) * 0.5


def _busy_but_sound(beat: Beat) -> bool:
    """A beat of a busy frame (usable, no artefact) whose complex matches the patient's normal QRS.

    Coarse fibrillatory waves (a chest lead like V1, where they are largest) and moderate muscle
    noise fill the QRS band, so such frames fail the level test; yet a complex that matches the
    patient's own template was detected where a QRS is, and its RR interval is sound evidence
    for AF and its rate.
    """
    return bool(beat.usable) and beat.match


def _rvr_grades() -> list[tuple[float, float]]:
    """(window s, mean rate it needs): 60 s at 150/min down to 300 s above 110/min."""
    out = []
    d = AF_RVR_FAST_S
    while d <= AF_RVR_S + 1e-9:
        need = AF_RVR_FAST_BPM - (d - AF_RVR_FAST_S) * (AF_RVR_FAST_BPM - AF_RVR_BPM) / (AF_RVR_S - AF_RVR_FAST_S)
        out.append((d, need))
        d += AF_RVR_STEP_S
    return out


class RvrClock:
    """Mean ventricular rate of AF over trailing windows of 60 s to 5 min.

    Keeps (time, cumulative RR sum) of the sound beats since AF began (good, or busy but
    template-matching); one moving index per window makes each judgement O(windows).
    """

    GRADES = _rvr_grades()

    def __init__(self) -> None:
        self._t: deque[float] = deque()
        self._cum: deque[float] = deque()  # RR sum up to and including this beat
        self._base = 0  # absolute index of _t[0]
        self._lo = [0] * len(self.GRADES)  # absolute index of the first beat inside each window
        self._total = 0.0
        self._dropped = 0.0  # cumulative RR sum at the last beat let go

    def add(self, t: float, rr: float) -> None:
        self._total += rr
        self._t.append(t)
        self._cum.append(self._total)
        # beats older than the longest window are not needed by any index
        while self._t and self._t[0] < t - AF_RVR_S - 1.0:
            self._t.popleft()
            self._dropped = self._cum.popleft()
            self._base += 1

    def _window(self, g: int, now: float, span: float) -> tuple[int, float] | None:
        """(beats, RR sum) of the beats in (now - span, now]; moves index g forward."""
        lo = max(self._lo[g], self._base)
        end = self._base + len(self._t)
        while lo < end and self._t[lo - self._base] <= now - span:
            lo += 1
        self._lo[g] = lo
        n = end - lo
        if n < 2:
            return None
        before = self._cum[lo - self._base - 1] if lo > self._base else self._dropped
        return n, self._total - before

    def fast_for(self, now: float, elapsed: float) -> tuple[float, float] | None:
        """(mean rate, window) of the shortest window whose rate is fast enough for its length."""
        for g, (span, need) in enumerate(self.GRADES):
            if span > elapsed + 1e-9:
                break
            w = self._window(g, now, span)
            if w is None:
                continue
            n, rr_sum = w
            if rr_sum < AF_RVR_COVER * span:
                continue
            bpm = 60.0 * n / rr_sum
            if bpm >= need and bpm > AF_RVR_BPM:
                return bpm, span
        return None

    def mean_bpm(self, now: float, span: float) -> float | None:
        # the grade whose window is nearest ``span`` (each grade's index follows its own window)
        g = min(len(self.GRADES) - 1, max(0, round((span - AF_RVR_FAST_S) / AF_RVR_STEP_S)))
        w = self._window(g, now, self.GRADES[g][0])
        if w is None:
            return None
        n, rr_sum = w
        return 60.0 * n / rr_sum if rr_sum > 0 else None


class AfDetector:
    """AF from RR irregularity, robust to ectopics and to bigeminy patterns, and P-wave absence.

    Only normal-to-normal intervals whose both ends are normal beats are used,
    and the irregularity is the smaller of the median lag-1 and lag-2
    successive differences (a bigeminal or alternating pattern repeats at
    lag 2, AF never repeats), divided by the median NN interval.

    The P-wave coherence of the same beats (``PWaveCoherence``) qualifies it:
    an irregular rhythm with a recurring P wave is sinus arrhythmia or atrial
    ectopy, not AF; one without is AF at a lower irregularity, and stays AF
    through moderately regular stretches (ectopy, rate control) until the
    rhythm is clearly regular or P waves return.  Without a P-wave verdict
    (too few long-enough normal intervals, e.g. > 150 bpm) the RR thresholds
    alone apply.
    """

    def __init__(self, confirm: Callable[[float], bool] | None = None) -> None:
        """``confirm(t)``: whether the signal up to ``t`` reads as AF to a second opinion; asked before
        the alarm is raised (None: never asked)."""
        self._confirm = confirm
        self._confirm_due = 0.0  # when a second opinion said no, when to ask again
        self.beats: deque[Beat] = deque(maxlen=AF_WINDOW + 1)
        self.in_af = False  # window judgement (with hysteresis)
        self.onset: float | None = None
        self.alarm = False
        self.rvr = False
        self.irregularity = 0.0
        self.p_wave = PWaveCoherence()
        self._rvr = RvrClock()
        self._busy = False  # the last scored window leaned on busy-frame beats
        self._rvr_due = 0.0  # the next time the RVR rate is judged

    def reset_window(self) -> None:
        self.beats.clear()
        self.p_wave.reset()

    def wants_p_window(self, beat: Beat) -> bool:
        """Whether ``beat``'s pre-QRS window counts (normal after normal, good, long enough RR)."""
        return (
            beat.cls == "N"
            and beat.good
            and beat.rr is not None
            and beat.rr > P_MIN_RR_S
            and len(self.beats) > 0
            and self.beats[-1].cls == "N"
        )

    def _enter(self, score: float) -> bool:
        c = self.p_wave.value
        if c is None:
            return score > AF_ON
        if c >= P_PRESENT:
            return False
        return score > (AF_ON if c < P_ABSENT else AF_ON_RR_ONLY)

    def _leave(self, score: float) -> bool:
        c = self.p_wave.value
        if c is None:
            return score < AF_OFF
        if c >= P_PRESENT:
            return True
        return score < (AF_OFF_NO_P if c < P_ABSENT else AF_OFF)

    def _score(self) -> float | None:
        # plain Python on ~32 values: much faster than NumPy's per-call overhead, same arithmetic
        # (np.median / np.percentile(..., 50) with linear interpolation, see _median_lerp)
        b = self.beats
        n = len(b)
        if n < AF_WINDOW // 2:
            return None
        bad = busy = 0
        for x in b:
            if not x.good:
                if x.usable and x.match:  # _busy_but_sound, inlined: this loop runs 32 times a beat
                    busy += 1
                else:
                    bad += 1
        if bad > n // 4:
            return None
        # a window leaning on busy-frame beats may start AF but not end it: before, such windows
        # decided nothing; letting them end AF split 203's AF into 7 alarms (Se 97.4 -> 95.7 %)
        self._busy = bad + busy > n // 4
        if self._busy and self.in_af:
            return None  # it could neither start AF (already in it) nor end it: save the work
        # rr[i] = the interval ending on beat i, between QRS energy centres (rr[0] unused; nan where
        # there is none, never read: nn[i] is False)
        rr = [math.nan if x.rr is None else x.rr if x.rr_centre is None else x.rr_centre for x in b]
        cls_n = [x.cls == "N" for x in b]
        nn = [False] * n  # nn[i]: the interval ending on beat i is normal-to-normal
        vals = []
        for i in range(1, n):
            if cls_n[i - 1] and cls_n[i] and b[i].rr is not None:
                nn[i] = True
                vals.append(rr[i])
        if len(vals) < AF_MIN_NN:
            return 0.0  # ectopy-dominated (e.g. bigeminy): not judged as AF
        vals.sort()
        m = len(vals)
        med = vals[m // 2] if m % 2 else (vals[m // 2 - 1] + vals[m // 2]) / 2
        if med <= 0:
            return None
        # RR outliers (pauses, premature beats missed by the classifier) are ectopy, not AF
        lo, hi = AF_RR_LOW * med, AF_RR_HIGH * med
        for i in range(1, n):
            if nn[i] and not lo < rr[i] < hi:
                nn[i] = False
        d1 = sorted([abs(rr[i] - rr[i - 1]) for i in range(2, n) if nn[i] and nn[i - 1]])
        if len(d1) < 6:
            return None
        s = _median_lerp(d1)
        d2 = sorted([abs(rr[i] - rr[i - 2]) for i in range(3, n) if nn[i] and nn[i - 2]])
        if len(d2) >= 6:
            s = min(s, _median_lerp(d2))
        return s / med

    def on_beat(self, beat: Beat, p_window: np.ndarray | None = None) -> list[Transition]:
        """``p_window``: the beat's detrended pre-QRS window when ``wants_p_window(beat)``."""
        self.p_wave.add(beat.t, p_window)
        self.beats.append(beat)
        out: list[Transition] = []
        score = self._score()
        if score is not None:
            self.irregularity = score
            mid = self.beats[len(self.beats) // 2].t
            if not self.in_af and self._enter(score):
                self.in_af, self.onset = True, mid
                self._rvr = RvrClock()  # a new AF episode: nothing of the last one counts
                self._rvr_due = 0.0
                self._confirm_due = 0.0
            elif self.in_af and not self._busy and self._leave(score):
                self.in_af = False
                out += self._end(mid)
        if self.in_af:
            if beat.rr is not None and (beat.good or _busy_but_sound(beat)):
                self._rvr.add(beat.t, beat.rr)
            if (
                not self.alarm
                and self.onset is not None
                and beat.t - self.onset >= AF_MIN_S
                and beat.t >= self._confirm_due
            ):
                if self._confirm is not None and not self._confirm(beat.t):
                    self._confirm_due = beat.t + AF_CONFIRM_S  # not AF to the strip reader: ask again later
                else:
                    self.alarm = True
                    out.append(Transition("af", True, self.onset, None, {"irregularity": round(self.irregularity, 3)}))
            if self.alarm:
                out += self._check_rvr(beat.t)
        return out

    def _check_rvr(self, now: float) -> list[Transition]:
        if self.onset is None or now < self._rvr_due:
            return []
        self._rvr_due = now + AF_RVR_EVERY_S
        elapsed = now - self.onset
        if not self.rvr:
            hit = self._rvr.fast_for(now, elapsed)
            if hit is None:
                return []
            self.rvr = True
            fast_bpm, over_s = hit
            return [Transition("af_rvr", True, now, None, {"mean_hr_bpm": round(fast_bpm, 1), "over_s": over_s})]
        mean_bpm = self._rvr.mean_bpm(now, min(AF_RVR_S, elapsed))
        if mean_bpm is not None and mean_bpm < AF_RVR_BPM - 5.0:
            self.rvr = False
            return [Transition("af_rvr", False, now, now, {"mean_hr_bpm": round(mean_bpm, 1)})]
        return []

    def _end(self, t: float) -> list[Transition]:
        out = []
        if self.rvr:
            self.rvr = False
            out.append(Transition("af_rvr", False, t, t))
        if self.alarm:
            self.alarm = False
            out.append(Transition("af", False, self.onset if self.onset is not None else t, t))
        self.onset = None
        return out


class VtDetector:
    """Runs of >= 3 consecutive ventricular beats faster than 100 bpm.

    A run is judged on its last 3 beats: their own frames must be good (the
    10-s context rule of the other rhythms does not apply: a run is judged on
    its own complexes, and a busy stretch before it is often its own onset), or, when
    their frames are only busy (the wide complexes themselves raise the QRS-band
    level against the sinus beats; usable, no artefact), the 3 complexes must
    be alike (each correlating >= ``VT_SAME_CORR`` with the one before) and
    unlike the normal template: a recurring monomorphic complex of its own
    shape is a ventricular focus, noise does not repeat itself.  A triplet in
    which two complexes match the normal template (wide-looking normal beats,
    e.g. small ones on a sloping baseline after a PVC) is not a run, nor is
    one with a complex below 0.3x the patient's normal QRS amplitude (none of
    the 3,488 matched reference V beats of the dev records is that small).

    In busy frames a polymorphic run also counts: three complexes that are each
    clearly not normal (>= ``VT_WIDE_REL`` x the normal width, or correlating
    < ``VT_UNLIKE_CORR`` with the normal QRS) and each >= ``VT_ALIKE_CORR`` alike
    the one before.  A triplet never ends on a ``run_only`` beat (template-shaped,
    called V only because it follows a V beat fast): such a beat is judged by the
    beat after it, so a couplet followed by a normal beat is not a run.  Nor is a triplet none of
    whose complexes is wider than normal (``VT_WIDE_REL``): a narrow-complex tachycardia (flutter
    with fixed conduction, SVT) whose complexes merely differ from the template.

    Good frames vouch for a triplet only when the artefact tests could run (the patient's
    normal QRS reference exists) and one complex is unrelated to the normal QRS or they recur
    (>= ``VT_ALIKE_CORR``); otherwise the busy-frame rules decide (false VT on the noisy 2017
    strips A00205, A01070 and on 201's PVC + aberrated APCs).  Nor do they vouch while the QRS
    detector's rejected peaks come near its QRS peaks (``noise_ratio`` > ``VT_GOOD_NOISE``: muscle
    noise in the QRS band that passes every frame test), unless all three complexes are unrelated
    to the normal QRS: noise-distorted normal beats keep some likeness to it.

    The learned beat model vouches too: three recurring complexes it gives P(V) >= ``VT_MODEL_SURE``,
    or three wide ones at >= ``VT_MODEL_ALONE`` however they differ (a multiform run), but only while
    the detector's rejected peaks stay <= ``VT_SURE_NOISE`` of its QRS peaks (in muscle noise it was
    sure of distorted normal beats).
    """

    def __init__(self) -> None:
        self.run: list[Beat] = []
        self.active = False
        self.sustained = False
        self.over_beats = False  # this run is an oscillation over the patient's own steady beats

    def _rate_ok(self, run: list[Beat]) -> bool:
        """The run's rate: the median of its RR intervals, the coupling interval of its first
        beat included (a run of n beats spans n intervals), so one late beat does not hide it."""
        rrs = sorted(b.rr for b in run if b.rr is not None)
        if len(rrs) < VT_BEATS - 1:
            return False
        return 60.0 / rrs[len(rrs) // 2] > VT_RATE_BPM

    @staticmethod
    def _trusted(last: list[Beat]) -> bool:
        if any(b.amp_ratio is not None and b.amp_ratio < VT_MIN_AMP for b in last):
            return False  # ventricular complexes are not small: a tiny one is a distorted normal beat
        # the learned model's word counts in quiet signal only: in muscle noise its "sure" V beats
        # were noise-distorted normal ones (105; vfdb half A 66 -> 14 false vt)
        model_heard = all(b.p_v is not None and b.noise_ratio <= VT_SURE_NOISE for b in last)
        if (
            model_heard
            and all(b.p_v is not None and b.p_v >= VT_MODEL_SURE for b in last)
            and all(b.prev_corr >= VT_ALIKE_CORR for b in last[1:])
        ):
            # the learned model is sure of all three and they recur: a run, whatever the template
            # looks like now (a run that reshaped it is exactly the case the template rules miss)
            return True
        if model_heard and all(b.p_v is not None and b.p_v >= VT_MODEL_ALONE and b.rel_w >= VT_WIDE_REL for b in last):
            # three wide complexes the model is all but certain of: a multiform run (each focus
            # its own shape), which the recurrence rules below refuse as noise
            return True
        # the normal shape at the normal width; a complex of the template's shape stretched to
        # VT_WIDE_REL x its width is a widened complex (a ventricular focus near the conduction
        # system, or aberration), and a fast run of them is a wide-complex tachycardia
        normal_shaped = sum(1 for b in last if b.match and b.rel_w < VT_WIDE_REL)
        if normal_shaped > 1:
            return False  # two of three complexes have the normal shape: mislabelled wide beats
        if max(b.rel_w for b in last) < VT_WIDE_REL:
            return False  # no complex wider than normal: a narrow-complex tachycardia (flutter 2:1, SVT)
        if last[-1].run_only:
            # a normal-shaped, normal-width complex called V only because it follows V beats fast:
            # it is judged by the beat after it (inside a run it stays, as the first normal beat
            # after a couplet it does not make one)
            return False
        if all(b.good if b.frame_good is None else b.frame_good for b in last) and (
            all(b.noise_ratio <= VT_GOOD_NOISE for b in last) or all(b.corr < VT_UNLIKE_CORR for b in last)
        ):
            # good frames vouch for a run only when they could have shown artefact: the step / hf /
            # amplitude tests need the patient's normal QRS reference (``amp_ratio`` known); before
            # it exists "good" only means the QRS-band level test passed.  And complexes that all
            # keep a likeness to the normal QRS (corr >= VT_UNLIKE_CORR) yet differ from one another
            # are normal beats distorted by noise or aberration, not a run: a ventricular run either
            # has a shape unrelated to the normal QRS or repeats its own.  Otherwise the busy-frame
            # recurrence rules below decide.
            if all(b.amp_ratio is not None for b in last) and (
                any(b.corr < VT_UNLIKE_CORR for b in last) or all(b.prev_corr >= VT_ALIKE_CORR for b in last[1:])
            ):
                return True
        if any(b.match or b.corr >= VT_BUSY_NORMAL_CORR for b in last):
            # in busy frames noise widens normal beats: a complex of the normal shape is one, however
            # wide it looks (the stretched-shape allowance above is for clean frames only), and so is
            # one that keeps a clear likeness to it: electrode motion distorts normal beats into
            # wide complexes alike one another (a ventricular run's complexes are unrelated to the
            # normal QRS: their largest correlation with it was 0.01 in the median triplet)
            return False
        # busy frames: the complexes must recur -- three nearly identical ones (monomorphic), or
        # three clearly abnormal ones (wide, or of a shape unrelated to the normal QRS), each
        # still alike the one before (a polymorphic run changes shape gradually; noise
        # "complexes" are unrelated to one another)
        return all(b.prev_corr >= VT_SAME_CORR for b in last[1:]) or (
            all(b.rel_w >= VT_WIDE_REL or b.corr < VT_UNLIKE_CORR for b in last)
            and all(b.prev_corr >= VT_ALIKE_CORR for b in last[1:])
        )

    def on_beat(
        self,
        beat: Beat,
        sharp_interval: Callable[[], float | None] | None = None,
        sharp_times: Callable[[], list[float]] | None = None,
    ) -> list[Transition]:
        """``sharp_interval``: the interval at which sharp QRS complexes recur steadily beneath
        the signal's last 4 s, if they do; asked once a run covers that window.  At a rate other
        than the run's the "run" is an oscillating artefact (tremor) over the patient's own beats,
        and it is neither raised nor escalated to ``vt_sustained``.  ``sharp_times``: the times of
        the sharp QRS complexes in the last 4 s, asked before a run is first raised (see
        ``_cadence_through``)."""
        usable = beat.good if beat.usable is None else beat.usable
        if beat.cls == "V" and usable and beat.reliable and (not self.run or beat.rr is not None):
            self.run.append(beat)
            if len(self.run) > 4096:
                del self.run[1:-4094]
            out: list[Transition] = []
            last = self.run[-VT_BEATS:]
            if not self.over_beats and self._beneath(sharp_interval):
                self.over_beats = True  # for the rest of this run: one clear look is enough
            if (
                not self.active
                and len(self.run) >= VT_BEATS
                and self._rate_ok(last)
                and self._trusted(last)
                and not self.over_beats
            ):
                if self._cadence_through(sharp_times):
                    self.over_beats = True
                    return out
                self.active = True
                out.append(Transition("vt", True, self.run[0].t, None, {"beats": len(self.run)}))
            if self.active and not self.sustained and beat.t - self.run[0].t >= VT_SUSTAINED_S and not self.over_beats:
                self.sustained = True
                out.append(Transition("vt_sustained", True, self.run[0].t, None, {"beats": len(self.run)}))
            return out
        return self.end(beat.t)

    def _beneath(self, sharp_interval: Callable[[], float | None] | None) -> bool:
        """Sharp QRSs recur steadily beneath the run, at another rate than its beats': an oscillating
        artefact (tremor) over the patient's own beats.  Judged only once the run covers the whole
        window the check looks at (before the run, the patient's own beats are expected)."""
        run = self.run
        if sharp_interval is None or run[-1].t - run[0].t < VT_BENEATH_SPAN_S:
            return False
        gap = sharp_interval()
        if gap is None:
            return False
        rrs = sorted(b.rr for b in run if b.rr is not None and b.t >= run[-1].t - VT_BENEATH_SPAN_S)
        return bool(rrs) and abs(rrs[len(rrs) // 2] - gap) > VT_BENEATH_DIFF * gap

    def _cadence_through(self, sharp_times: Callable[[], list[float]] | None) -> bool:
        """The patient's own sharp QRS complexes go on, on time, all through the run: an oscillating
        artefact (tremor) over steady beats, not a ventricular run.

        Judged when a run is first to be raised, before it covers the 4-s window ``_beneath``
        needs: every sharp complex of the window must keep one steady cadence (each interval
        within ``VT_CADENCE_TOL`` of their median, none left out), and one must stand where each
        next one is due inside the run's span, projected from the last one at or before its
        start.  In a true run the sinus complexes stop: ventricular complexes are wide, not sharp,
        and sharp ones come at their own coupling, which breaks the cadence (mitdb 207 at 125 Hz).
        """
        if sharp_times is None:
            return False
        run = self.run
        first, last = run[0].t, run[-1].t
        spikes = sharp_times()
        if len(spikes) < 3:
            return False
        gaps = sorted(b - a for a, b in zip(spikes, spikes[1:]))
        gap = gaps[len(gaps) // 2]
        if not (
            SPIKE_GAP_S[0] <= gap <= SPIKE_GAP_S[1]
            and gaps[0] >= (1 - VT_CADENCE_TOL) * gap
            and gaps[-1] <= (1 + VT_CADENCE_TOL) * gap
        ):
            return False  # every sharp complex of the window, none left out, on one steady cadence
        rrs = sorted(b.rr for b in run[1:] if b.rr is not None)
        if rrs and abs(rrs[len(rrs) // 2] - gap) <= VT_BENEATH_DIFF * gap:
            return False  # the "run" keeps the patient's own cadence: not an oscillation over it
        tol = VT_CADENCE_TOL * gap
        before = [s for s in spikes if s <= first + tol]
        if not before:
            return False  # the cadence does not reach back to the run's start
        due = before[-1] + gap
        expected = 0
        while due <= last + tol:
            if due >= first - tol:
                expected += 1
                if not any(abs(s - due) <= tol for s in spikes):
                    return False
            due += gap
        return expected > 0

    def end(self, t: float) -> list[Transition]:
        """The run is over (a non-ventricular beat, bad signal or a gap)."""
        out = []
        if self.active:
            last = self.run[-1].t
            if self.sustained:
                out.append(Transition("vt_sustained", False, self.run[0].t, last))
            out.append(Transition("vt", False, self.run[0].t, last, {"beats": len(self.run)}))
        self.run = []
        self.active = self.sustained = self.over_beats = False
        return out


def vf_leakage(w: np.ndarray) -> float:
    """Kuo & Dillman's VF-filter leakage of a (band-limited, zero-mean) signal.

    A notch at the signal's mean frequency (estimated from |w| and |dw|) removes a
    sine wave completely: flutter/fibrillation leaks little (< ~0.4), a rhythm of
    distinct QRS complexes with harmonics and a baseline between them leaks a lot.
    """
    a = np.abs(w)
    d = float(np.abs(np.diff(w)).sum())
    if d <= 0.0:
        return 1.0
    half = int(np.pi * float(a.sum()) / d + 0.5)
    if half < 1 or half >= len(w):
        return 1.0
    num = float(np.abs(w[half:] + w[:-half]).sum())
    den = float((a[half:] + a[:-half]).sum())
    return num / den if den > 0.0 else 1.0


class VfDetector:
    """Ventricular flutter / fibrillation: a large, sine-like 2-9 Hz oscillation."""

    def __init__(self) -> None:
        self.frames: deque[tuple[float, float, float, float, int]] = deque(maxlen=4)
        self.waves: deque[np.ndarray] = deque(maxlen=4)  # the same frames' 0.7-40 Hz samples
        self.leakage = 1.0
        self.run_start: float | None = None
        self.last_vf: float | None = None
        self.active = False

    def reset(self) -> None:
        self.frames.clear()
        self.waves.clear()

    def on_frame(
        self,
        t_end: float,
        e_vf: float,
        e_wide: float,
        e4_wide: float,
        n: int,
        ptp: float,
        usable: bool,
        wide: np.ndarray | None = None,
        organised: bool = False,
        beats_beneath: Callable[[], bool] | None = None,
    ) -> list[Transition]:
        """``beats_beneath``: asked only when the frames look like fibrillation -- whether sharp
        QRS complexes go on beneath the oscillation, regular or not (then it is tremor, or the
        coarse fibrillatory waves of atrial fibrillation: the ventricles beat)."""
        if not usable:
            self.frames.clear()
            self.waves.clear()
            return self._miss(t_end)
        self.frames.append((e_vf, e_wide, e4_wide, ptp, n))
        if wide is not None:
            self.waves.append(wide)
        if len(self.frames) < 4:
            return self._miss(t_end)
        ev = sum(f[0] for f in self.frames)
        ew = sum(f[1] for f in self.frames)
        e4 = sum(f[2] for f in self.frames)
        nn = sum(f[4] for f in self.frames)
        if ew <= 0:
            return self._miss(t_end)
        kurt = e4 * nn / (ew * ew)
        vf_like = ev / ew > VF_BAND_SHARE and kurt < VF_KURTOSIS_MAX and min(f[3] for f in self.frames) > VF_MIN_UV
        if vf_like and organised and len(self.waves) == len(self.frames):
            # distinct, recurring QRS complexes at a regular rate: VT (or a fast organised rhythm),
            # unless the waveform is as sinusoidal as flutter/fibrillation (low VF-filter leakage)
            self.leakage = vf_leakage(np.concatenate(self.waves))
            vf_like = self.leakage < VF_LEAKAGE_MAX
        if vf_like and beats_beneath is not None and beats_beneath():
            vf_like = False
        if not vf_like:
            return self._miss(t_end)
        if self.run_start is None:
            self.run_start = t_end - 4.0
        self.last_vf = t_end
        if not self.active and t_end - self.run_start >= VF_PERSIST_S:
            self.active = True
            return [Transition("vt_sustained", True, self.run_start, None, {"vf": True})]
        return []

    def _miss(self, t_end: float) -> list[Transition]:
        if self.active and self.last_vf is not None and t_end - self.last_vf >= VF_CLEAR_S:
            self.active = False
            start, self.run_start = self.run_start, None
            return [
                Transition(
                    "vt_sustained", False, start if start is not None else self.last_vf, self.last_vf, {"vf": True}
                )
            ]
        if not self.active and (self.last_vf is None or t_end - self.last_vf >= 1.5):
            self.run_start = None
        return []


class PauseDetector:
    """Pauses (RR >= 3 s, >= 5 s in AF) and asystole (no QRS >= 5 s) on a clean baseline."""

    def __init__(self) -> None:
        self.last_beat: Beat | None = None
        self.clean_since_beat = True  # every frame after the last beat was usable and not noisy
        self.asystole = False
        self.pause_open = False
        self.pause_last_end = 0.0
        self.pause_start = 0.0

    def reset(self) -> list[Transition]:
        """A gap or unusable signal: forget the last beat (a gap is never a pause)."""
        out = self._close_asystole(None)
        self.last_beat = None
        return out

    def _close_asystole(self, t: float | None) -> list[Transition]:
        if not self.asystole:
            return []
        self.asystole = False
        start = self.last_beat.t if self.last_beat else 0.0
        return [Transition("asystole", False, start, t if t is not None else start + ASYSTOLE_S)]

    def on_frame(self, t_end: float, clean: bool, in_af: bool, vf: bool) -> list[Transition]:
        out: list[Transition] = []
        if self.pause_open and t_end - self.pause_last_end >= PAUSE_HOLD_S:
            self.pause_open = False
            out.append(Transition("pause", False, self.pause_start, self.pause_last_end))
        if self.last_beat is None:
            return out
        if not clean or vf:
            self.clean_since_beat = False
            return out + self.reset()
        if (
            not self.asystole
            and self.clean_since_beat
            and self.last_beat.good
            and self.last_beat.match
            and t_end - self.last_beat.t >= ASYSTOLE_S
        ):
            self.asystole = True
            out.append(
                Transition("asystole", True, self.last_beat.t, None, {"no_qrs_s": round(t_end - self.last_beat.t, 2)})
            )
        return out

    def on_beat(self, beat: Beat, in_af: bool) -> list[Transition]:
        out: list[Transition] = []
        prev = self.last_beat
        if prev is not None and beat.rr is not None:
            if self.asystole:
                out += self._close_asystole(beat.t)
            elif (
                beat.rr >= (AF_PAUSE_S if in_af else PAUSE_S)
                and self.clean_since_beat
                and prev.good
                and beat.good
                and prev.match
                and beat.match
            ):
                self.pause_last_end = beat.t
                if not self.pause_open:
                    self.pause_open = True
                    self.pause_start = prev.t
                    out.append(Transition("pause", True, prev.t, beat.t, {"rr_s": round(beat.rr, 3)}))
        self.last_beat = beat
        self.clean_since_beat = True
        return out

    def close_all(self, t: float) -> list[Transition]:
        out = self._close_asystole(t)
        if self.pause_open:
            self.pause_open = False
            out.append(Transition("pause", False, self.pause_start, self.pause_last_end))
        return out


class Sustained:
    """How long a rate condition has held, tolerant of brief contrary and unknown stretches.

    At home a patient moves: a few seconds of motion artefact (rate unknown) or one 10-s window
    just under the limit must not restart a 10-minute clock, or a real tachycardia is never
    raised.  The condition holds while contrary time stays under ``SUSTAIN_CONTRARY`` of the
    elapsed time, no unknown stretch exceeds ``SUSTAIN_UNKNOWN_S``, and the rate was known for at
    least ``SUSTAIN_COVERAGE`` of it.
    """

    __slots__ = ("since", "last_t", "known_s", "contrary_s", "unknown_run")

    def __init__(self) -> None:
        self.since: float | None = None
        self.last_t: float | None = None
        self.known_s = self.contrary_s = self.unknown_run = 0.0

    def reset(self) -> None:
        self.since = None
        self.known_s = self.contrary_s = self.unknown_run = 0.0

    def update(self, now: float, state: bool | None) -> None:
        """``state``: the condition holds now (True), does not (False), rate unknown (None)."""
        dt = 0.0 if self.last_t is None else min(max(now - self.last_t, 0.0), 5.0)
        self.last_t = now
        if self.since is None:
            if state:
                self.since = now
            return
        if state is None:
            self.unknown_run += dt
            if self.unknown_run > SUSTAIN_UNKNOWN_S:
                self.reset()
            return
        self.unknown_run = 0.0
        self.known_s += dt
        if not state:
            self.contrary_s += dt
            if self.contrary_s > SUSTAIN_CONTRARY * (now - self.since):
                self.reset()

    def held_for(self, now: float) -> float:
        """Seconds the condition has held (0 while not established or not covered well enough)."""
        if self.since is None or self.known_s < SUSTAIN_COVERAGE * (now - self.since):
            return 0.0
        return now - self.since


def _tachy_levels() -> list[float]:
    n = int(round((TACHY_FAST_BPM - TACHY_BPM) / TACHY_STEP_BPM))
    return [TACHY_BPM + i * TACHY_STEP_BPM for i in range(n + 1)]


def _tachy_needed_s(bpm: float) -> float:
    """Seconds a rate above ``bpm`` must hold: 10 min at 100/min down to 1 min at 150/min."""
    share = (bpm - TACHY_BPM) / (TACHY_FAST_BPM - TACHY_BPM)
    return TACHY_S - share * (TACHY_S - TACHY_FAST_S)


class RateDetector:
    """Brady- and tachycardia with persistence (``Sustained``), from the median RR of the last 10 s."""

    def __init__(self) -> None:
        self.recent: deque[tuple[float, float]] = deque(maxlen=64)  # (t, rr) of good beats
        self.hr: float | None = None
        self.slow = Sustained()  # HR < 40
        # (rate, seconds needed, clock): HR above 100, 110, ... 140 and >= 150 (not in AF / VT / VF,
        # which have their own alarms)
        self.levels: list[tuple[float, float, Sustained]] = [
            (bpm, _tachy_needed_s(bpm), Sustained()) for bpm in _tachy_levels()
        ]
        self.brady = False
        self.tachy = False

    def on_beat(self, beat: Beat) -> None:
        if beat.rr is not None and beat.good:
            self.recent.append((beat.t, beat.rr))

    def reset(self) -> None:
        """A gap in the data: the clocks restart (the alarms stay as they are)."""
        self.recent.clear()
        self.slow.reset()
        self._reset_tachy()

    def _reset_tachy(self) -> None:
        for _, _, clock in self.levels:
            clock.reset()

    def current_hr(self, now: float) -> float | None:
        while self.recent and self.recent[0][0] < now - RATE_WINDOW_S:
            self.recent.popleft()
        if len(self.recent) < 2:
            return None
        rrs = sorted(r for _, r in self.recent)
        return 60.0 / rrs[len(rrs) // 2]

    def on_frame(self, now: float, good: bool, suppress_tachy: bool) -> list[Transition]:
        out: list[Transition] = []
        hr = self.current_hr(now) if good else None
        self.hr = hr
        self.slow.update(now, hr < BRADY_BPM if hr is not None else None)
        if suppress_tachy:
            # AF, VT or VF raise their own alarms: the rate is theirs, not a tachycardia
            self._reset_tachy()
        else:
            for bpm, _, clock in self.levels:
                clock.update(now, (hr >= bpm if bpm >= TACHY_FAST_BPM else hr > bpm) if hr is not None else None)
        # bradycardia
        if hr is not None and hr < BRADY_BPM:
            since = self.slow.since
            if not self.brady and since is not None and self.slow.held_for(now) >= BRADY_S:
                self.brady = True
                out.append(Transition("bradycardia", True, since, None, {"hr_bpm": round(hr, 1)}))
        elif self.brady and hr is not None and hr >= BRADY_BPM + 5:
            self.brady = False
            self.slow.reset()  # a new episode must persist again (no flapping on the clock)
            out.append(Transition("bradycardia", False, now, now, {"hr_bpm": round(hr, 1)}))
        # tachycardia: > 100 for 10 min ... >= 150 for 1 min (the fastest level that has held long enough)
        if hr is not None and hr > TACHY_BPM and not suppress_tachy:
            if not self.tachy:
                for bpm, need_s, clock in reversed(self.levels):
                    if hr < bpm or clock.since is None or clock.held_for(now) < need_s:
                        continue
                    self.tachy = True
                    severity = "high" if bpm >= TACHY_FAST_BPM else "moderate"
                    out.append(
                        Transition(
                            "tachycardia",
                            True,
                            clock.since,
                            None,
                            {
                                "hr_bpm": round(hr, 1),
                                "above_bpm": bpm,
                                "held_s": round(now - clock.since, 1),
                                "severity": severity,
                            },
                        )
                    )
                    break
        elif self.tachy and (suppress_tachy or (hr is not None and hr <= TACHY_BPM - 5)):
            self.tachy = False
            self._reset_tachy()
            out.append(Transition("tachycardia", False, now, now, {"hr_bpm": round(hr, 1) if hr is not None else None}))
        return out


class PvcBurden:
    """PVC frequency over the last hour, counted per minute (bounded)."""

    def __init__(self) -> None:
        self.minutes: deque[tuple[int, int]] = deque(maxlen=60)  # (normal, ventricular)
        self.cur_n = 0
        self.cur_v = 0
        self.active = False

    def on_beat(self, beat: Beat) -> None:
        # only beats of good signal whose morphology recurs (not noise "beats") are counted
        if not beat.good or not beat.reliable:
            return
        if beat.cls == "V":
            self.cur_v += 1
        else:
            self.cur_n += 1

    def on_minute(self, now: float) -> list[Transition]:
        self.minutes.append((self.cur_n, self.cur_v))
        self.cur_n = self.cur_v = 0
        n = sum(m[0] for m in self.minutes)
        v = sum(m[1] for m in self.minutes)
        rate_known = len(self.minutes) >= PVC_MIN_MINUTES
        burden_known = n + v >= PVC_MIN_BEATS
        if not rate_known and not burden_known:
            return []
        per_h = v * 60.0 / len(self.minutes)
        burden = v / (n + v) if n + v else 0.0
        detail = {"pvc_per_h": round(per_h, 1), "burden": round(burden, 3), "minutes": len(self.minutes)}
        if not self.active and ((rate_known and per_h > PVC_PER_H) or (burden_known and burden > PVC_BURDEN)):
            self.active = True
            return [Transition("pvc_frequent", True, now, None, detail)]
        if self.active and per_h < 0.8 * PVC_PER_H and burden < 0.8 * PVC_BURDEN:
            self.active = False
            return [Transition("pvc_frequent", False, now, now, detail)]
        return []


class LeadOffTracker:
    """The technical condition: unusable or noisy signal for more than 5 minutes."""

    def __init__(self) -> None:
        self.bad_since: float | None = None
        self.good_since: float | None = None
        self.active = False

    def on_frame(self, t_start: float, t_end: float, bad: bool) -> list[Transition]:
        if bad:
            self.good_since = None
            if self.bad_since is None:
                self.bad_since = t_start
            if not self.active and t_end - self.bad_since >= LEAD_OFF_RAISE_S:
                self.active = True
                return [Transition("lead_off", True, self.bad_since, None, {"bad_s": round(t_end - self.bad_since, 1)})]
            return []
        if self.good_since is None:
            self.good_since = t_start
        if t_end - self.good_since >= LEAD_OFF_CLEAR_S:
            self.bad_since = None
            if self.active:
                self.active = False
                return [Transition("lead_off", False, self.good_since, self.good_since)]
        return []
