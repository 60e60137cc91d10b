"""Silence watchdog: `device_offline` for streaming devices, `missed_readings` for scheduled ones.

Pure: the caller passes the gateway's wall-clock `now` and each device's last
receive time; the watch remembers what it raised so it can clear it when the
device speaks again. A device never heard from since start counts from the
gateway's start (we cannot know about silence before we were running).

Defaults (docs/spec/clinical-rules.md §Routing): a streaming device (ECG patch, SpO2 clip) is offline
after 30 min without traffic; a device with a `schedule` (e.g. a cuff used
every 24 h) has missed a reading when it is more than 24 h overdue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from stream.models import Condition, DeviceKind, Finding

DEFAULT_OFFLINE_AFTER: dict[DeviceKind, timedelta | None] = {
    DeviceKind.ECG: timedelta(minutes=30),
    DeviceKind.SPO2: None,  # spot-check clips are silent between checks; set expected_interval for continuous ones
    DeviceKind.BLOOD_PRESSURE: None,
    DeviceKind.GLUCOSE: None,
    DeviceKind.ECG_HANDHELD: None,  # used at a visit, silent in between
}
MISSED_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class WatchedDevice:
    device_id: str
    patient_id: str
    kind: DeviceKind
    offline_after: timedelta | None  # None: never "offline", the device only speaks on use
    schedule: timedelta | None  # expected time between readings; None: no schedule
    missed_grace: timedelta = MISSED_GRACE


class DeviceWatch:
    def __init__(self, devices: list[WatchedDevice], started_at: datetime) -> None:
        self.devices = devices
        self.started_at = started_at
        self._raised: set[tuple[str, Condition]] = set()

    def check(self, now: datetime, last_seen: dict[str, datetime]) -> list[Finding]:
        out: list[Finding] = []
        for d in self.devices:
            seen = last_seen.get(d.device_id)
            silent = now - (seen or self.started_at)
            ev = {
                "device_id": d.device_id,
                "kind": d.kind.value,
                "last_seen": seen.isoformat() if seen else None,
                "silent_s": int(silent.total_seconds()),
            }
            if d.offline_after is not None:
                out += self._level(d, Condition.DEVICE_OFFLINE, silent > d.offline_after, now, ev)
            if d.schedule is not None:
                out += self._level(d, Condition.MISSED_READINGS, silent > d.schedule + d.missed_grace, now, ev)
        return out

    def _level(self, d: WatchedDevice, cond: Condition, on: bool, now: datetime, ev: dict) -> list[Finding]:
        key = (d.device_id, cond)
        if on and key not in self._raised:
            self._raised.add(key)
            return [Finding(patient_id=d.patient_id, condition=cond, at=now, evidence=ev)]
        if not on and key in self._raised:
            self._raised.discard(key)
            return [Finding(patient_id=d.patient_id, condition=cond, active=False, at=now, evidence=ev)]
        return []
