"""Threshold rules for blood pressure, glucose and SpO2 (docs/spec/clinical-rules.md §Routing and §Data quality).

Pure: each rule looks at one patient's state and a new reading and returns
findings; the stream core feeds it in device-time order per patient. All
timing (crisis confirmation, SpO2 persistence, hypo recheck) uses device time,
so back-filled records are judged as they happened.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from stream.models import (
    Accepted,
    BatteryReading,
    BloodPressureReading,
    Condition,
    Finding,
    GlucoseReading,
    Severity,
    Spo2Reading,
    Tier,
)
from stream.thresholds import BpThresholds, Thresholds

# Bounded history: a week of readings at a generous 48 a day.
_BP_HISTORY = 400


@dataclass
class PatientRuleState:
    bp: BpHistory = field(default_factory=lambda: BpHistory(_BP_HISTORY))
    last_hypo_at: datetime | None = None
    spo2_low_since: datetime | None = None
    spo2_severe_since: datetime | None = None
    active: set[Condition] = field(default_factory=set)
    newest: dict[str, datetime] = field(default_factory=dict)  # newest device time seen per reading kind


def evaluate(acc: Accepted, state: PatientRuleState, th: Thresholds) -> list[Finding]:
    r = acc.reading
    follow_up = acc.received_at - r.ts > th.backfill_age
    # A reading older than one already judged (meter back-fill, out-of-order delivery) may raise
    # but never clears or resets anything: the present outranks the past.
    newest = state.newest.get(r.kind)
    historical = newest is not None and r.ts < newest
    if not historical:
        state.newest[r.kind] = r.ts
    if isinstance(r, BloodPressureReading):
        found = _bp(acc.patient_id, r, state, th, historical)
    elif isinstance(r, GlucoseReading):
        found = _glucose(acc.patient_id, r, state, th, historical)
    elif isinstance(r, Spo2Reading):
        found = [] if historical else _spo2(acc.patient_id, r, state, th)
    elif isinstance(r, BatteryReading):
        found = _level(
            acc.patient_id, Condition.BATTERY_LOW, r.percent <= 20, r.ts, {"battery_percent": r.percent}, state
        )
    else:
        found = []
    if isinstance(r, GlucoseReading) and "battery_low" in r.flags:
        found.append(
            Finding(
                patient_id=acc.patient_id,
                condition=Condition.BATTERY_LOW,
                at=r.ts,
                evidence={"device_id": acc.device_id, "source": "glucose status b0"},
            )
        )
    if not found:
        return found
    evidence_base = {"device_id": acc.device_id}
    if historical:
        found = [f for f in found if f.active]
    return [
        f.model_copy(
            update={
                "follow_up": follow_up and f.active,
                "evidence": {**evidence_base, **f.evidence, **({"backfilled": True} if follow_up else {})},
            }
        )
        for f in found
    ]


def _level(
    patient: str, cond: Condition, on: bool, at: datetime, evidence: dict, state: PatientRuleState, **kw: object
) -> list[Finding]:
    """Raise on the way in, clear on the way out; repeats while on update the alert."""
    if on:
        state.active.add(cond)
        return [Finding(patient_id=patient, condition=cond, at=at, evidence=evidence, **kw)]
    if cond in state.active:
        state.active.discard(cond)
        return [Finding(patient_id=patient, condition=cond, active=False, at=at, evidence=evidence)]
    return []


def _bp(
    patient: str, r: BloodPressureReading, state: PatientRuleState, th: Thresholds, historical: bool = False
) -> list[Finding]:
    t = th.bp
    hist = state.bp
    questionable = r.status.questionable
    crisis_now = r.systolic >= t.crisis_systolic or r.diastolic >= t.crisis_diastolic
    confirmed_by: BpEntry | None = None
    if crisis_now and not questionable:
        # Confirmation: another unflagged crisis reading 1–5 min away by device time. Either
        # side: readings of a pair can arrive newest first (back-fill, redelivery).
        confirmed_by = hist.crisis_partner(r, t)
    hist.insert(r)
    crisis_on = confirmed_by is not None
    crisis_off = not crisis_on and not crisis_now and Condition.BP_CRISIS in state.active and not questionable

    # bp_high: two readings >= 160/100 within the window, or a 7-day home mean >= 135/85.
    n, sum_sys, sum_dia, n_high = hist.window_stats(r.ts, t)
    mean_sys = sum_sys / n if n else 0.0
    mean_dia = sum_dia / n if n else 0.0
    mean_high = n >= t.home_mean_min_readings and (
        mean_sys >= t.home_mean_systolic or mean_dia >= t.home_mean_diastolic
    )
    is_high = n_high >= 2 or mean_high
    if not (crisis_on or crisis_off or is_high or Condition.BP_HIGH in state.active):
        return []  # nothing raised or cleared: skip building the evidence

    out: list[Finding] = []
    ev: dict[str, object] = {"systolic": r.systolic, "diastolic": r.diastolic, "pulse": r.pulse, "ts": r.ts.isoformat()}
    if questionable:
        ev["flags"] = [k for k, v in r.status.model_dump().items() if v]
    if confirmed_by is not None:
        prev = confirmed_by
        ev["confirmed_by"] = {"systolic": prev.systolic, "diastolic": prev.diastolic, "ts": prev.ts.isoformat()}
    if crisis_on:
        out += _level(patient, Condition.BP_CRISIS, True, r.ts, ev, state)
    elif crisis_off:
        out += _level(patient, Condition.BP_CRISIS, False, r.ts, ev, state)
    ev_high = dict(ev, mean_systolic=round(mean_sys, 1), mean_diastolic=round(mean_dia, 1), readings=n)
    out += _level(patient, Condition.BP_HIGH, is_high, r.ts, ev_high, state)
    return out


_EXACT_LIMIT = 2.0**40  # integer-valued floats below this add up exactly (8,192 of them stay < 2**53)


def _exact_int(v: float) -> int | None:
    """v as an int when a float sum of such values is exact (so a running int sum equals it), else None."""
    if type(v) is float:
        return int(v) if v.is_integer() and -_EXACT_LIMIT < v < _EXACT_LIMIT else None
    if type(v) is int and -_EXACT_LIMIT < v < _EXACT_LIMIT:
        return v
    return None


class BpEntry(NamedTuple):
    """What the rules keep of a BP reading: one tuple of plain values, a few hundred bytes,
    instead of the pydantic model (several objects, about a kilobyte, all walked by the GC)."""

    ts: datetime
    systolic: float
    diastolic: float
    questionable: bool
    isys: int | None  # systolic as an exact int, if it is one (see _exact_int)
    idia: int | None

    @classmethod
    def of(cls, r: BloodPressureReading) -> BpEntry:
        return cls(
            r.ts, r.systolic, r.diastolic, r.status.questionable, _exact_int(r.systolic), _exact_int(r.diastolic)
        )


_MIN_TS = datetime.min.replace(tzinfo=UTC)
_MAX_TS = datetime.max.replace(tzinfo=UTC)


def _shift(ts: datetime, delta: timedelta) -> datetime:
    try:
        return ts + delta
    except OverflowError:
        return _MIN_TS if delta < timedelta(0) else _MAX_TS


class BpHistory:
    """A patient's last `maxlen` BP readings (as `BpEntry`) in device-time order, with the home-mean
    window kept incrementally.

    Same contents as a deque(maxlen) kept sorted by device time (a late reading
    goes after those with the same time; when full, the oldest by device time
    goes), so the rules decide exactly as a scan of it would, without scanning:

    - `crisis_partner` looks only at readings within the confirmation gap (bisect);
    - `window_stats(ts)` are the count, sums and high count of the unflagged
      readings with device time >= ts - window, read from running sums over the
      suffix of entries at or after a cut-off that only moves forward (entries
      are subtracted as they fall out of the window or the buffer). A reading
      older than the cut-off (a back-fill) adds the few entries between its own
      cut-off and the running one on the fly.
    - Sums are kept as exact ints when every value in the window is an integer
      (the float sum of such values is exact, so the means are the same floats);
      any other value (a kPa cuff's 0.1 mmHg) makes `window_stats` sum the window
      in order, as before.
    """

    __slots__ = ("maxlen", "_ts", "_ent", "_cut", "_lo", "_key", "_n", "_sys", "_dia", "_high", "_inexact")

    def __init__(self, maxlen: int = _BP_HISTORY) -> None:
        self.maxlen = maxlen
        self._ts: list[datetime] = []  # device times, sorted (bisect)
        self._ent: list[BpEntry] = []  # parallel to _ts
        self._key: tuple | None = None  # (window, high_systolic, high_diastolic) the sums are for
        self._reset_sums()

    def _reset_sums(self) -> None:
        self._cut: datetime | None = None  # entries before it (the first _lo) are outside the sums
        self._lo = 0
        self._n = self._sys = self._dia = self._high = self._inexact = 0

    # ------------------------------------------------------------ read access (entries, oldest first)

    def __len__(self) -> int:
        return len(self._ent)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._ent)

    def __reversed__(self):  # type: ignore[no-untyped-def]
        return reversed(self._ent)

    def __getitem__(self, i: int) -> BpEntry:
        return self._ent[i]

    # ------------------------------------------------------------ updates

    def _account(self, e: BpEntry, sign: int) -> None:
        if e.questionable or self._key is None:
            return
        self._n += sign
        if e.isys is None or e.idia is None:
            self._inexact += sign
        else:
            self._sys += sign * e.isys
            self._dia += sign * e.idia
        if e.systolic >= self._key[1] or e.diastolic >= self._key[2]:
            self._high += sign

    def insert(self, r: BloodPressureReading) -> None:
        e = BpEntry.of(r)
        ts = self._ts
        if not ts or ts[-1] <= r.ts:  # the usual case: in device-time order
            ts.append(r.ts)
            self._ent.append(e)
        else:
            pos = bisect_right(ts, r.ts)
            ts.insert(pos, r.ts)
            self._ent.insert(pos, e)
        if self._cut is None or not r.ts < self._cut:
            self._account(e, 1)
        else:
            self._lo += 1  # it went in before the cut-off (everything from _lo on is at or after it)
        if len(ts) > self.maxlen:  # the oldest by device time goes (possibly r itself)
            del ts[0]
            old = self._ent.pop(0)
            if self._lo > 0:
                self._lo -= 1
            else:
                self._account(old, -1)

    # ------------------------------------------------------------ queries

    def crisis_partner(self, r: BloodPressureReading, t: BpThresholds) -> BpEntry | None:
        """The newest-in-order unflagged crisis reading 1–5 min (device time) from r, if any."""
        lo = bisect_left(self._ts, _shift(r.ts, -t.crisis_confirm_max_gap))
        hi = bisect_right(self._ts, _shift(r.ts, t.crisis_confirm_max_gap))
        ent = self._ent
        for i in range(hi - 1, lo - 1, -1):
            e = ent[i]
            gap = abs(r.ts - e.ts)
            if (
                t.crisis_confirm_min_gap <= gap <= t.crisis_confirm_max_gap
                and not e.questionable
                and (e.systolic >= t.crisis_systolic or e.diastolic >= t.crisis_diastolic)
            ):
                return e
        return None

    def window_stats(self, ts: datetime, t: BpThresholds) -> tuple[int, float, float, int]:
        """(count, sum systolic, sum diastolic, count >= high) over unflagged readings at or after ts - window."""
        key = (t.home_mean_window, t.high_systolic, t.high_diastolic)
        if key != self._key:  # other thresholds than the sums were kept for: start over
            self._key = key
            self._reset_sums()
            for e in self._ent:
                self._account(e, 1)
        cut = _shift(ts, -t.home_mean_window)
        ent = self._ent
        if self._cut is None or not cut < self._cut:
            # Move the cut-off forward: subtract what fell out of the window.
            lo = self._lo
            end = len(ent)
            while lo < end and ent[lo].ts < cut:
                self._account(ent[lo], -1)
                lo += 1
            self._lo = lo
            self._cut = cut
            n, inexact, s_sys, s_dia, high, first = self._n, self._inexact, self._sys, self._dia, self._high, lo
        else:
            # A back-fill older than the running cut-off: add the entries between the two.
            n, inexact, s_sys, s_dia, high = self._n, self._inexact, self._sys, self._dia, self._high
            first = bisect_left(self._ts, cut)
            hs, hd = key[1], key[2]
            for e in ent[first : self._lo]:
                if e.questionable:
                    continue
                n += 1
                if e.isys is None or e.idia is None:
                    inexact += 1
                else:
                    s_sys += e.isys
                    s_dia += e.idia
                if e.systolic >= hs or e.diastolic >= hd:
                    high += 1
        if inexact:  # not exact as ints: the float sums in device-time order, as a scan computes them
            window = [e for e in ent[first:] if not e.questionable]
            return n, sum(e.systolic for e in window), sum(e.diastolic for e in window), high
        return n, float(s_sys), float(s_dia), high


def _glucose(
    patient: str, r: GlucoseReading, state: PatientRuleState, th: Thresholds, historical: bool = False
) -> list[Finding]:
    t = th.glucose
    out: list[Finding] = []
    g = r.mmol_l
    ev: dict = {"mmol_l": g, "meal": r.meal, "ts": r.ts.isoformat()}
    if r.range:
        ev["meter_range"] = r.range.upper()
    is_lo = r.range == "lo" or (g is not None and g < t.hypo)
    severe = r.range == "lo" or (g is not None and g < t.hypo_severe)
    if is_lo and not severe and state.last_hypo_at is not None:
        since = r.ts - state.last_hypo_at
        if timedelta(0) < since <= t.recheck_within:
            severe = True
            ev["recheck"] = f"still below {t.hypo} mmol/L {int(since.total_seconds() // 60)} min after the first low"
    if is_lo:
        ev["action"] = "give 15 g fast sugar, recheck in 15 minutes"
    if not historical:
        state.last_hypo_at = r.ts if is_lo else None
    out += _level(patient, Condition.HYPOGLYCEMIA_SEVERE, severe, r.ts, ev, state)
    out += _level(patient, Condition.HYPOGLYCEMIA, is_lo and not severe, r.ts, ev, state)

    hi = r.range == "hi" or (g is not None and g >= t.hyper)
    crisis = r.range == "hi" or (g is not None and g >= t.hyper_crisis)
    hhs = r.range == "hi" or (g is not None and g >= t.hyper_hhs)
    crisis_kw: dict = {"tier": Tier.COUNTY, "severity": Severity.CRITICAL} if hhs else {}
    if hhs:
        ev = dict(ev, suspected="hyperosmolar hyperglycaemic state (meter cannot confirm)")
    out += _level(patient, Condition.HYPERGLYCEMIA_CRISIS, crisis, r.ts, ev, state, **crisis_kw)
    out += _level(patient, Condition.HYPERGLYCEMIA, hi and not crisis, r.ts, ev, state)
    return out


def _spo2(patient: str, r: Spo2Reading, state: PatientRuleState, th: Thresholds) -> list[Finding]:
    t = th.spo2
    # Persistence: consecutive low readings spanning >= `persist` of device time.
    state.spo2_low_since = (state.spo2_low_since or r.ts) if r.spo2 < t.low else None
    state.spo2_severe_since = (state.spo2_severe_since or r.ts) if r.spo2 < t.severe else None
    low = state.spo2_low_since is not None and r.ts - state.spo2_low_since >= t.persist
    severe = state.spo2_severe_since is not None and r.ts - state.spo2_severe_since >= t.persist
    ev = {
        "spo2": r.spo2,
        "pulse": r.pulse,
        "ts": r.ts.isoformat(),
        "low_since": state.spo2_low_since.isoformat() if state.spo2_low_since else None,
    }
    kw: dict = {"tier": Tier.EMERGENCY, "severity": Severity.CRITICAL} if severe else {}
    if r.spo2 < t.low and not low:
        return []  # not yet persistent; neither raise nor clear
    return _level(patient, Condition.SPO2_LOW, low, r.ts, ev, state, **kw)
