"""Threshold rules for blood pressure, glucose and SpO2 (DOMAIN.md §2.1 and §3).

Pure: each rule looks at one patient's state and a new reading and returns
findings; the stream core feeds it in device-time order per patient. All
timing (crisis confirmation, SpO2 persistence, hypo recheck) uses device time,
so back-filled records are judged as they happened.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
from stream.thresholds import Thresholds

# Bounded history: a week of readings at a generous 48 a day.
_BP_HISTORY = 400


@dataclass
class PatientRuleState:
    bp: deque[BloodPressureReading] = field(default_factory=lambda: deque(maxlen=_BP_HISTORY))
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
        found = _level(acc.patient_id, Condition.BATTERY_LOW, r.percent <= 20, r.ts, {"battery_percent": r.percent}, state)
    else:
        found = []
    if isinstance(r, GlucoseReading) and "battery_low" in r.flags:
        found.append(Finding(patient_id=acc.patient_id, condition=Condition.BATTERY_LOW, at=r.ts,
                             evidence={"device_id": acc.device_id, "source": "glucose status b0"}))
    evidence_base = {"device_id": acc.device_id}
    if historical:
        found = [f for f in found if f.active]
    return [
        f.model_copy(update={"follow_up": follow_up and f.active, "evidence": {**evidence_base, **f.evidence,
                                                                               **({"backfilled": True} if follow_up else {})}})
        for f in found
    ]


def _level(patient: str, cond: Condition, on: bool, at: datetime, evidence: dict, state: PatientRuleState,
           **kw: object) -> list[Finding]:
    """Raise on the way in, clear on the way out; repeats while on update the alert."""
    if on:
        state.active.add(cond)
        return [Finding(patient_id=patient, condition=cond, at=at, evidence=evidence, **kw)]  # type: ignore[arg-type]
    if cond in state.active:
        state.active.discard(cond)
        return [Finding(patient_id=patient, condition=cond, active=False, at=at, evidence=evidence)]
    return []


def _bp(patient: str, r: BloodPressureReading, state: PatientRuleState, th: Thresholds,
        historical: bool = False) -> list[Finding]:
    t = th.bp
    out: list[Finding] = []
    ev = {"systolic": r.systolic, "diastolic": r.diastolic, "pulse": r.pulse, "ts": r.ts.isoformat()}
    if r.status.questionable:
        ev["flags"] = [k for k, v in r.status.model_dump().items() if v]

    crisis_now = r.systolic >= t.crisis_systolic or r.diastolic >= t.crisis_diastolic
    confirmed = False
    if crisis_now and not r.status.questionable:
        # Confirmation: another unflagged crisis reading 1–5 min away by device time. Either
        # side: readings of a pair can arrive newest first (back-fill, redelivery).
        for prev in reversed(state.bp):
            gap = abs(r.ts - prev.ts)
            if (
                t.crisis_confirm_min_gap <= gap <= t.crisis_confirm_max_gap
                and not prev.status.questionable
                and (prev.systolic >= t.crisis_systolic or prev.diastolic >= t.crisis_diastolic)
            ):
                confirmed = True
                ev["confirmed_by"] = {"systolic": prev.systolic, "diastolic": prev.diastolic, "ts": prev.ts.isoformat()}
                break
    _insert_ordered(state.bp, r)
    if confirmed:
        out += _level(patient, Condition.BP_CRISIS, True, r.ts, ev, state)
    elif not crisis_now and Condition.BP_CRISIS in state.active and not r.status.questionable:
        out += _level(patient, Condition.BP_CRISIS, False, r.ts, ev, state)

    # bp_high: two readings >= 160/100 within the window, or a 7-day home mean >= 135/85.
    window = [b for b in state.bp if r.ts - b.ts <= t.home_mean_window and not b.status.questionable]
    high = [b for b in window if b.systolic >= t.high_systolic or b.diastolic >= t.high_diastolic]
    mean_sys = sum(b.systolic for b in window) / len(window) if window else 0.0
    mean_dia = sum(b.diastolic for b in window) / len(window) if window else 0.0
    mean_high = len(window) >= t.home_mean_min_readings and (
        mean_sys >= t.home_mean_systolic or mean_dia >= t.home_mean_diastolic
    )
    is_high = len(high) >= 2 or mean_high
    ev_high = dict(ev, mean_systolic=round(mean_sys, 1), mean_diastolic=round(mean_dia, 1), readings=len(window))
    out += _level(patient, Condition.BP_HIGH, is_high, r.ts, ev_high, state)
    return out


def _insert_ordered(buf: deque[BloodPressureReading], r: BloodPressureReading) -> None:
    # Back-filled readings arrive late; keep the history in device-time order.
    if not buf or buf[-1].ts <= r.ts:
        buf.append(r)
        return
    items = sorted([*buf, r], key=lambda b: b.ts)
    buf.clear()
    buf.extend(items[-(buf.maxlen or len(items)):])


def _glucose(patient: str, r: GlucoseReading, state: PatientRuleState, th: Thresholds,
             historical: bool = False) -> list[Finding]:
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
    ev = {"spo2": r.spo2, "pulse": r.pulse, "ts": r.ts.isoformat(),
          "low_since": state.spo2_low_since.isoformat() if state.spo2_low_since else None}
    kw: dict = {"tier": Tier.EMERGENCY, "severity": Severity.CRITICAL} if severe else {}
    if r.spo2 < t.low and not low:
        return []  # not yet persistent; neither raise nor clear
    return _level(patient, Condition.SPO2_LOW, low, r.ts, ev, state, **kw)
