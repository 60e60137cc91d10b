"""What the console's pages read, and from whom: the seam between the read side and the running gateway.

The pages never see the `Gateway` object. `box/app.py` hands them a
`ConsoleSources`: the clinic's patients and devices as the config lists them,
the alert store (read), the dispatcher (a doctor's actions, its counts) and
the process's live state that is in no store (who was heard last, BLE links,
queues, outboxes, the MQTT connection). Each part is a Protocol of exactly
what the pages use, so a test can hand in anything that has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from dispatch.alert_store import StoredAlert
from stream.core import Counters
from stream.models import Alert, AlertState, DeviceKind, Tier


class BleAddress(Protocol):
    @property
    def address(self) -> str | None: ...


class Device(Protocol):
    """A configured device (box.config.DeviceConfig)."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> DeviceKind: ...
    @property
    def ble(self) -> BleAddress | None: ...
    @property
    def expected_interval(self) -> timedelta | None: ...
    @property
    def schedule(self) -> timedelta | None: ...


class Patient(Protocol):
    """A configured patient (box.config.PatientConfig)."""

    @property
    def id(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, object]: ...
    @property
    def devices(self) -> Sequence[Device]: ...


class AlertBook(Protocol):
    """The alert store as the pages read it (dispatch.alert_store.AlertStore)."""

    def get(self, alert_id: str) -> StoredAlert | None: ...
    def active(self, patient_id: str | None = None) -> list[StoredAlert]: ...
    def list_alerts(
        self, states: list[AlertState] | None = None, patient_id: str | None = None, limit: int = 200
    ) -> list[StoredAlert]: ...
    def transitions(self, alert_id: str | None = None) -> list[dict]: ...
    def pending(self) -> list[tuple[int, Tier, str]]: ...


class AlertDesk(Protocol):
    """What a doctor can do to an alert, and the transitions and counts behind it (dispatch.dispatcher.Dispatcher)."""

    @property
    def counters(self) -> Mapping[str, int]: ...
    def listen(self, listener: Callable[[Alert, str], None]) -> None: ...
    async def acknowledge(self, alert_id: str, by: str) -> Alert | None: ...
    async def snooze(self, alert_id: str, by: str, duration: timedelta, why: str = "") -> Alert | None: ...


class LiveState(Protocol):
    """The running gateway's state that is in no store (box.app.Gateway)."""

    @property
    def counters(self) -> Counters: ...
    def device_last_seen(self, device_id: str) -> datetime | None: ...
    def ble_status(self) -> Mapping[str, Mapping[str, Any]]: ...
    def queue_depth(self) -> int: ...
    def forwarding_status(self) -> Mapping[str, Any]: ...
    def mqtt_connected(self) -> bool: ...
    def ecg_analysis_status(self) -> Mapping[str, Any]: ...  # shards/ecg_analysis.py: analysis_status


class StripDesk(Protocol):
    """A doctor's action on a screening strip (box.app.Gateway, which holds the reading store)."""

    def refer_strip(self, strip_key: str, by: str, note: str = "") -> bool | None: ...  # None: no such strip;

    # False: already marked referred (the first mark stays); True: marked now


class Account(Protocol):
    """A person's console account (box.config.ConsoleAccount; console/accounts.py)."""

    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def password_hash(self) -> str: ...


@dataclass(frozen=True)
class ConsoleSources:
    """Everything the console reads. `stopping` is set when the gateway shuts down (live streams end)."""

    clinic: str
    patients: Sequence[Patient]
    storage: Path  # the stores' directory, read through console.clinic_records
    token: str  # the API bearer token (http.token); also the console password when there are no accounts
    tls: bool  # served over HTTPS: the session cookie is Secure
    clock: Callable[[], datetime]
    stopping: asyncio.Event
    alerts: AlertBook
    desk: AlertDesk
    live: LiveState
    strips: StripDesk | None = None  # None: the referral button answers 503 (a read-only console)
    accounts: Sequence[Account] = ()  # people who may sign in (http.accounts); empty: the shared token

    def patient(self, patient_id: str) -> Patient | None:
        return next((p for p in self.patients if p.id == patient_id), None)
