"""What clinics uplink, read back from the log: readings, alert transitions and clinic status.

A message's subject says what it is (after the servers' mapping, county/engine_config.py):
``vgp.{K}.{clinic}.reading.{patient}``, ``vgp.{K}.{clinic}.alert.{tier}``, ``vgp.{K}.{clinic}.status``.
Payloads are the gateway's own JSON (docs/spec/public-surface.md#mqtt). Pure functions, no I/O.

Identity of a measurement: clinic + device + kind + device time + seq. It is what the gateway's
payload carries whichever way the message came (MQTT 3.1.1 through a server's listener carries no
user properties, a native publish carries `Nats-Msg-Id`), so the same measurement delivered twice,
or once each way, has one key. Device time is compared as an instant (`+08:00` and `Z` spellings of
one moment are one key).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

CHINA = timezone(timedelta(hours=8))  # a time without an offset is read as +08:00, as the gateway does


@dataclass(frozen=True)
class ReadingIn:
    clinic: str
    patient_id: str
    device_id: str
    kind: str
    ts: str
    ts_epoch: float
    seq: int | None
    key: str
    body: str


@dataclass(frozen=True)
class AlertIn:
    clinic: str
    alert_id: str
    patient_id: str
    tier: str
    condition: str
    severity: str
    state: str
    opened_at: str
    opened_epoch: float
    updated_at: str
    updated_epoch: float
    acknowledged_by: str | None
    escalated_from: str | None
    key: str
    body: str


@dataclass(frozen=True)
class StatusIn:
    clinic: str
    online: bool
    will: bool  # the broker's last will (only clinic, online: false, version)
    body: str
    # (patient_id, village) from the status's `villages` ({village: [patient ids]}, the gateway's
    # `patients[].labels.village`); None when the status carries none (a last will, an older gateway)
    villages: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class Unreadable:
    subject: str
    reason: str


Uplinked = ReadingIn | AlertIn | StatusIn | Unreadable


def instant(text: str) -> float:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=CHINA)
    return t.timestamp()


def reading_key(clinic: str, device_id: str, kind: str, ts_epoch: float, seq: int | None) -> str:
    return f"{clinic}|{device_id}|{kind}|{ts_epoch:.6f}|{'' if seq is None else seq}"


def parse(subject: str, data: bytes) -> Uplinked:
    parts = subject.split(".")
    if len(parts) < 4:
        return Unreadable(subject, "unexpected subject")
    clinic, what = parts[2], parts[3]
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return Unreadable(subject, "not JSON")
    if not isinstance(body, dict):
        return Unreadable(subject, "not a JSON object")
    try:
        if what == "reading" and len(parts) == 5:
            return _reading(clinic, parts[4], body, data)
        if what == "alert" and len(parts) == 5:
            return _alert(clinic, parts[4], body, data)
        if what == "status" and len(parts) == 4:
            online = bool(body.get("online", False))
            will = not online and "updated_at" not in body
            return StatusIn(clinic, online, will, data.decode(), villages_of(body.get("villages")))
    except (KeyError, TypeError, ValueError) as exc:
        return Unreadable(subject, f"missing or bad field: {exc}")
    return Unreadable(subject, "unexpected subject")


def villages_of(roster: object) -> tuple[tuple[str, str], ...] | None:
    """The status's `villages` ({village: [pseudonymous patient ids]}) as (patient_id, village) pairs.

    Entries that are not a string village with a list of string ids are left out: a bad roster
    never costs the clinic's status."""
    if not isinstance(roster, dict):
        return None
    return tuple(
        (pid, village)
        for village, ids in roster.items()
        if isinstance(village, str) and village and isinstance(ids, list)
        for pid in ids
        if isinstance(pid, str) and pid
    )


def _reading(clinic: str, patient: str, body: dict, data: bytes) -> ReadingIn:
    ts = str(body["ts"])
    ts_epoch = instant(ts)
    seq = body.get("seq")
    seq = int(seq) if isinstance(seq, (int, float)) and not isinstance(seq, bool) else None
    device, kind = str(body["device_id"]), str(body["kind"])
    return ReadingIn(
        clinic=clinic,
        patient_id=str(body.get("patient_id") or patient),
        device_id=device,
        kind=kind,
        ts=ts,
        ts_epoch=ts_epoch,
        seq=seq,
        key=reading_key(clinic, device, kind, ts_epoch, seq),
        body=data.decode(),
    )


def _alert(clinic: str, tier_topic: str, body: dict, data: bytes) -> AlertIn:
    opened = str(body["opened_at"])
    updated = str(body.get("updated_at") or opened)
    tier = str(body.get("tier") or tier_topic)
    state = str(body["state"])
    alert_id = str(body["alert_id"])
    return AlertIn(
        clinic=str(body.get("clinic") or clinic),
        alert_id=alert_id,
        patient_id=str(body.get("patient_id", "")),
        tier=tier,
        condition=str(body.get("condition", "")),
        severity=str(body.get("severity", "")),
        state=state,
        opened_at=opened,
        opened_epoch=instant(opened),
        updated_at=updated,
        updated_epoch=instant(updated),
        acknowledged_by=body.get("acknowledged_by"),
        escalated_from=body.get("escalated_from"),
        key=f"{alert_id}|{tier}|{state}|{updated}",
        body=data.decode(),
    )
