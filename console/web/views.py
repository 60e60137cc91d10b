"""What each page shows, computed from the console's sources and the clinic's storage (no HTML here).

Adherence: a BP cuff or glucose meter is expected to report once per its
`schedule` (default once a day, the usual home-monitoring advice); over the
last 7 days (or since the device first reported, if later) the expected count
minus the readings received is the number of missed readings.

Connection state: a BLE device is `connected` or `disconnected` as the
gateway's own link says. An MQTT device is `offline` while a device_offline
alert is open for it, `online` when it reported within its expected interval
(2 min for an ECG patch, schedule + 24 h for a spot-check device, 48 h without
a schedule), `silent` after that, `never` if it has not reported.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from console.clinic_records import ClinicRecords
from console.web.sources import ConsoleSources
from dispatch.alert_store import StoredAlert
from stream.models import AlertState, DeviceKind, Severity

SEVERITY_ORDER = [Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW]
ADHERENCE_WINDOW = timedelta(days=7)
STREAMING_ONLINE = timedelta(minutes=2)
SPOT_CHECK_ONLINE = timedelta(hours=48)
BP_TARGET = (140.0, 90.0)
GLUCOSE_RANGE = (3.9, 10.0)


def _age_s(at: datetime | str | None, now: datetime) -> float | None:
    if at is None:
        return None
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return max(0.0, (now - at).total_seconds())


def evidence_summary(ev: dict[str, Any]) -> str:
    """One line of the values that made an alert, for the list: '186/116 mmHg', '2.6 mmol/L', 'HR 132'."""
    parts = []
    if "systolic" in ev and "diastolic" in ev:
        parts.append(f"{ev['systolic']:g}/{ev['diastolic']:g} mmHg")
    if ev.get("mmol_l") is not None:
        parts.append(f"{ev['mmol_l']:g} mmol/L")
    if ev.get("spo2") is not None:
        parts.append(f"SpO2 {ev['spo2']:g}%")
    if ev.get("hr_bpm") is not None:
        parts.append(f"HR {ev['hr_bpm']:g}")
    if ev.get("battery_percent") is not None:
        parts.append(f"{ev['battery_percent']}%")
    if ev.get("device_id") and not parts:
        parts.append(str(ev["device_id"]))
    return " · ".join(parts)


def alert_row(s: StoredAlert, now: datetime) -> dict[str, Any]:
    a = s.alert
    shown = a.state.value
    if a.state is AlertState.FIRING and s.suppressed:
        shown = "snoozed" if s.suppressed == "snooze" else "held"
    return {
        "alert_id": a.alert_id,
        "patient_id": a.patient_id,
        "condition": a.condition.value,
        "severity": a.severity.value,
        "tier": a.tier.value,
        "state": a.state.value,
        "shown_state": shown,
        "opened_age_s": _age_s(a.opened_at, now),
        "updated_age_s": _age_s(a.updated_at, now),
        "opened_at": a.opened_at.strftime("%m-%d %H:%M"),
        "acknowledged_by": a.acknowledged_by,
        "escalated_from": a.escalated_from.value if a.escalated_from else None,
        "snoozed_until": s.snoozed_until.strftime("%H:%M") if s.snoozed_until else None,
        "summary": evidence_summary(a.evidence),
        "has_strip": isinstance(a.evidence.get("strip"), dict),
        "can_ack": a.state is AlertState.FIRING,
        "can_snooze": a.state is AlertState.FIRING,
    }


def alerts_view(src: ConsoleSources, now: datetime | None = None) -> dict[str, Any]:
    now = now or src.clock()
    active = src.alerts.list_alerts([AlertState.FIRING, AlertState.ACKNOWLEDGED], None, 1000)
    groups: dict[str, list[dict]] = {s.value: [] for s in SEVERITY_ORDER}
    for s in active:
        groups[s.alert.severity.value].append(alert_row(s, now))
    for rows in groups.values():  # firing before acknowledged, newest first
        rows.sort(key=lambda r: (r["state"] != "firing", r["opened_age_s"] or 0))
    recent = [
        alert_row(s, now)
        for s in src.alerts.list_alerts([AlertState.RESOLVED], None, 100)
        if (now - s.alert.updated_at) <= timedelta(hours=24)
    ]
    counts = {sev: sum(1 for r in rows if r["state"] == "firing") for sev, rows in groups.items()}
    return {
        "groups": [(sev, groups[sev]) for sev in groups if groups[sev]],
        "recent": recent[:30],
        "counts": counts,
        "total": len(active),
    }


# ---------------------------------------------------------------- devices


def device_rows(src: ConsoleSources, records: ClinicRecords, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or src.clock()
    ble = src.live.ble_status()
    offline_alerts = {
        str(s.alert.evidence.get("device_id"))
        for s in src.alerts.active()
        if s.alert.condition.value == "device_offline"
    }
    rows = []
    for p in src.patients:
        for d in p.devices:
            seen = src.live.device_last_seen(d.id) or records.last_reading_at(p.id, d.id)
            age = _age_s(seen, now)
            link = "ble" if d.ble else "mqtt"
            if d.ble:
                st = ble.get(d.id, {})
                state = "connected" if st.get("connected") else ("offline" if st.get("offline") else "disconnected")
            elif d.id in offline_alerts:
                state = "offline"
            elif age is None:
                state = "never"
            else:
                if d.kind is DeviceKind.ECG or (d.kind is DeviceKind.SPO2 and d.expected_interval):
                    limit = STREAMING_ONLINE
                elif d.schedule:
                    limit = d.schedule + timedelta(hours=24)
                else:
                    limit = SPOT_CHECK_ONLINE
                state = "online" if age <= limit.total_seconds() else "silent"
            b = records.latest_battery(p.id, d.id)
            rows.append(
                {
                    "device_id": d.id,
                    "kind": d.kind.value,
                    "patient_id": p.id,
                    "link": link,
                    "state": state,
                    "connected": state in ("connected", "online"),
                    "last_seen_s": age,
                    "last_seen_at": seen.strftime("%m-%d %H:%M:%S") if seen else None,
                    "battery": b.get("percent") if b else None,
                    "battery_low": bool(b and b.get("percent", 100) <= 20),
                    "ble_address": d.ble.address if d.ble else None,
                }
            )
    return rows


# ---------------------------------------------------------------- patients


def adherence(src: ConsoleSources, records: ClinicRecords, patient_id: str, now: datetime) -> dict[str, Any]:
    """Missed readings over the last 7 days for the patient's cuffs and meters (see module docstring)."""
    since = now - ADHERENCE_WINDOW
    p = next(p for p in src.patients if p.id == patient_id)
    missed, expected, got = 0, 0, 0
    counts = records.count_by_device(patient_id, since)
    for d in p.devices:
        if d.kind not in (DeviceKind.BLOOD_PRESSURE, DeviceKind.GLUCOSE):
            continue
        first = records.first_reading_ts(patient_id, d.id)
        if first is None:
            continue  # never reported: the device list says so
        n = counts.get(d.id, 0)
        start = max(since, first)
        every = d.schedule or timedelta(days=1)
        exp = max(1, int((now - start) / every))
        expected += exp
        got += min(n, exp)  # extra readings from one device do not make up for another's missed ones
        missed += max(0, exp - n)
    return {"missed": missed, "expected": expected, "got": got, "known": expected > 0}


def patient_summary(
    src: ConsoleSources, records: ClinicRecords, patient_id: str, now: datetime, active: list[StoredAlert]
) -> dict[str, Any]:
    p = next(p for p in src.patients if p.id == patient_id)
    bp = records.latest(patient_id, "blood_pressure")
    glu = records.latest(patient_id, "glucose")
    if glu is not None:  # stored without None fields: a "HI"/"LO" reading has no mmol_l
        glu = {"mmol_l": None, "range": None, **glu}
    spo2 = records.latest(patient_id, "spo2")
    rhythm = records.latest_rhythm(patient_id)
    week = records.readings(patient_id, "blood_pressure", since=now - ADHERENCE_WINDOW)
    mine = [s for s in active if s.alert.patient_id == patient_id]
    worst = max(
        (s.alert.severity for s in mine if s.alert.state is AlertState.FIRING), key=lambda s: s.rank, default=None
    )
    return {
        "patient_id": patient_id,
        "labels": dict(p.labels),
        "bp": bp,
        "bp_age_s": _age_s(bp["ts"], now) if bp else None,
        "bp_high": bool(bp and (bp["systolic"] >= BP_TARGET[0] or bp["diastolic"] >= BP_TARGET[1])),
        "glucose": glu,
        "glucose_age_s": _age_s(glu["ts"], now) if glu else None,
        "glucose_out": bool(
            glu and glu.get("mmol_l") is not None and not GLUCOSE_RANGE[0] <= glu["mmol_l"] <= GLUCOSE_RANGE[1]
        ),
        "spo2": spo2,
        "rhythm": rhythm,
        "rhythm_age_s": _age_s(rhythm["ts"], now) if rhythm else None,
        "has_ecg": any(d.kind is DeviceKind.ECG for d in p.devices),
        "adherence": adherence(src, records, patient_id, now),
        "systolic_week": [r["systolic"] for r in week],
        "alerts_firing": sum(1 for s in mine if s.alert.state is AlertState.FIRING),
        "alerts_open": len(mine),
        "worst": worst.value if worst else None,
    }


def patients_view(src: ConsoleSources, records: ClinicRecords, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or src.clock()
    active = src.alerts.active()
    rows = [patient_summary(src, records, p.id, now, active) for p in src.patients]
    rank = {s.value: i for i, s in enumerate(SEVERITY_ORDER)}
    # Who needs the doctor first: firing alerts by severity, then the rest in config order.
    return sorted(rows, key=lambda r: rank.get(r["worst"], 9) if r["worst"] else 9)


def bp_points(rows: list[dict]) -> tuple[list, list]:
    sys_, dia = [], []
    for r in rows:
        t = datetime.fromisoformat(r["ts"])
        sys_.append((t, float(r["systolic"])))
        dia.append((t, float(r["diastolic"])))
    return sys_, dia


def glucose_points(rows: list[dict]) -> list:
    return [(datetime.fromisoformat(r["ts"]), float(r["mmol_l"])) for r in rows if r.get("mmol_l") is not None]


def hourly_hr(rhythm_rows: list[dict]) -> list[tuple[datetime, float]]:
    """Per-minute heart rates averaged per hour (a week of minutes is too many points for a page)."""
    buckets: dict[datetime, list[float]] = {}
    for r in rhythm_rows:
        if r["hr_bpm"] is None:
            continue
        t = datetime.fromisoformat(r["ts"])
        buckets.setdefault(t.replace(minute=0, second=0, microsecond=0), []).append(float(r["hr_bpm"]))
    if len(buckets) < 3:  # a short recording: show the minutes themselves
        return [(datetime.fromisoformat(r["ts"]), float(r["hr_bpm"])) for r in rhythm_rows if r["hr_bpm"] is not None]
    return [(t + timedelta(minutes=30), sum(v) / len(v)) for t, v in sorted(buckets.items())]


# ---------------------------------------------------------------- AF screening (short strips)

REFER_LABELS = ("af", "other")  # screening results a doctor refers on (docs/ecg-screening.md)
REFERRED_SHOWN = timedelta(days=30)


def strip_row(s: dict[str, Any], now: datetime) -> dict[str, Any]:
    ts = datetime.fromisoformat(s["ts"])
    same_day = ts.date() == now.astimezone(ts.tzinfo).date()
    return {
        **s,
        "at": ts.strftime("%H:%M" if same_day else "%m-%d %H:%M"),
        "age_s": _age_s(ts, now),
        # a strip too noisy to read has no heart rate worth showing (the detector counted noise too)
        "hr_bpm": None if s["label"] == "noisy" else s["hr_bpm"],
        "retake": s["label"] == "noisy",
        "refer": s["label"] in REFER_LABELS,
        "referred_at_short": s["referred_at"][5:16].replace("T", " ") if s.get("referred_at") else None,
        "confidence_pct": round(100 * s["confidence"]),
        "seconds_r": round(s["seconds"]),
    }


def screening_view(records: ClinicRecords, now: datetime, patient_id: str | None = None) -> dict[str, Any]:
    """Today's strips (or one patient's), the referral list (`af`/`other` not yet marked referred, oldest
    first: they have waited longest) and the recently referred ones."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if patient_id:
        strips = records.strips(patient_id, limit=200)
    else:
        strips = records.strips(since=midnight, limit=500)
    waiting = records.strips(patient_id, labels=REFER_LABELS, referred=False, limit=500)[::-1]
    referred = records.strips(patient_id, since=now - REFERRED_SHOWN, labels=REFER_LABELS, referred=True, limit=100)
    counts = {lab: sum(1 for s in strips if s["label"] == lab) for lab in ("normal", "af", "other", "noisy")}
    # what the page compares to decide whether to swap its lists (a strip's result never changes)
    sig = f"{len(strips)}.{strips[0]['key'] if strips else ''}.{len(waiting)}.{len(referred)}"
    return {
        "strips": [strip_row(s, now) for s in strips],
        "waiting": [strip_row(s, now) for s in waiting],
        "referred": [strip_row(s, now) for s in referred],
        "counts": counts,
        "patient_id": patient_id,
        "total": len(strips),
        "sig": sig,
    }
