"""``BleIngress``: every BLE device in the config, connected through BlueZ, feeding the one ingress path.

Given the configured BLE devices (``BleConfig``: the part of the gateway
config it reads), an async ``submit(Accepted, on_stored)`` (in the gateway:
the stream core, acknowledged once durable) and an async
``on_finding(Finding)`` (the dispatcher), it runs one
:class:`~gateway.ble.connection.DeviceLink` per device over a shared
discovery and a connection cap. Decoded readings are bound to their patient
with ``gateway.ingress.bind`` (source ``"ble"``), exactly as MQTT readings
are, then submitted; rejections go to ``on_reject`` (the gateway's counters).

It also owns the ``device_offline`` technical condition for BLE devices
(village tier by the default routes): a device that has shown no sign of life
- no advertisement, connect or value - for longer than its expected interval
(``expected_interval`` in the config, else the profile's default) raises a
finding; the first sign of life clears it. One alert per patient exists
(dispatcher rule), so it stays raised while any of the patient's BLE devices
is silent, and its evidence lists which.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from gateway.ble.connection import (
    MAX_SIMULTANEOUS_CONNECTIONS,
    DeviceLink,
    DeviceMatcher,
    DeviceOutlet,
    Discovery,
    RetryPolicy,
)
from gateway.ble.profiles import Profile, make_profile
from gateway.ble.racp_watermarks import RacpWatermarks
from gateway.ingress import DeviceBinding, bind
from stream.models import Accepted, AnyReading, Condition, DeviceKind, Finding, Rejected, iso, now_local

log = logging.getLogger("vitalgate.ble")

# The stream core's submit: (reading, on_stored callback or None).
Submit = Callable[[Accepted, Callable[[], None] | None], Awaitable[object]]
OnFinding = Callable[[Finding], Coroutine[Any, Any, object]]  # an async def: its call is the task's coroutine
OnReject = Callable[[Rejected], None]

# How often silence is checked, as a share of the shortest expected interval (bounded).
OFFLINE_CHECK_FRACTION = 0.25
OFFLINE_CHECK_MIN_S = 0.1
OFFLINE_CHECK_MAX_S = 30.0
# Inside the gateway, BLE starts once the local broker is connected (so the first readings are
# republished on the patient topics like MQTT ones), or after this long without it.
WAIT_FOR_BROKER_S = 10.0


def _log_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("device_offline finding failed: %s", task.exception())


class _BleLinkConfig(Protocol):
    @property
    def profile(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...


class _DeviceConfig(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> DeviceKind: ...
    @property
    def ble(self) -> _BleLinkConfig | None: ...
    @property
    def expected_interval(self) -> timedelta | None: ...


class _PatientConfig(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def devices(self) -> Sequence[_DeviceConfig]: ...


class _AdapterConfig(Protocol):
    @property
    def adapter(self) -> str | None: ...
    @property
    def max_connections(self) -> int: ...


class _StorageConfig(Protocol):
    @property
    def path(self) -> Path: ...


class BleConfig(Protocol):
    """What BLE ingress reads of the gateway config (box.config.GatewayConfig)."""

    @property
    def patients(self) -> Sequence[_PatientConfig]: ...
    @property
    def storage(self) -> _StorageConfig: ...
    @property
    def ble(self) -> _AdapterConfig: ...


@dataclass(frozen=True)
class BleDeviceSpec:
    """One configured BLE device (built from the config, or directly in tests)."""

    device_id: str
    patient_id: str
    kind: DeviceKind
    profile: str
    address: str | None = None
    name: str | None = None
    expected_interval: timedelta | None = None


@dataclass
class _DeviceState:
    spec: BleDeviceSpec
    profile: Profile
    link: DeviceLink
    expected_s: float | None  # None: never offline (a device that only speaks when used)
    last_activity: float = 0.0  # monotonic
    last_activity_at: datetime | None = None
    offline: bool = False
    accepted: int = 0
    rejected: int = 0
    readings: list[Accepted] = field(default_factory=list)  # kept only when record=True (tests)


class _Outlet(DeviceOutlet):
    def __init__(self, ingress: BleIngress, device_id: str) -> None:
        self._ingress = ingress
        self._device_id = device_id

    async def reading(
        self, reading: AnyReading, received_at: datetime, on_stored: Callable[[], None] | None = None
    ) -> None:
        await self._ingress._reading(self._device_id, reading, received_at, on_stored)

    def reject(self, rejected: Rejected) -> None:
        self._ingress._reject(self._device_id, rejected)

    def activity(self) -> None:
        self._ingress._activity(self._device_id)


class BleIngress:
    def __init__(
        self,
        devices: list[BleDeviceSpec],
        *,
        submit: Submit,
        on_finding: OnFinding,
        storage: Path,
        on_reject: OnReject | None = None,
        clock: Callable[[], datetime] = now_local,
        adapter: str | None = None,
        max_connections: int = MAX_SIMULTANEOUS_CONNECTIONS,
        policy: RetryPolicy | None = None,
        record: bool = False,
        sole_owner_patients: set[str] | None = None,
        start_after: asyncio.Event | None = None,
    ) -> None:
        self._submit = submit
        self._on_finding = on_finding
        self._on_reject = on_reject
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.record = record
        self.watermarks = RacpWatermarks(Path(storage))
        self.slots = asyncio.Semaphore(max_connections)
        self.max_connections = max_connections
        self.discovery = Discovery(adapter, self.policy, on_advert=self._on_advert)
        self.devices: dict[str, _DeviceState] = {}
        # Patients all of whose devices are BLE: only then may a startup "clear" be sent for them.
        self._sole_owner = sole_owner_patients if sole_owner_patients is not None else {d.patient_id for d in devices}
        for spec in devices:
            profile = make_profile(spec.profile, spec.device_id, self.watermarks)
            link = DeviceLink(
                spec.device_id,
                DeviceMatcher(spec.address, spec.name),
                profile,
                _Outlet(self, spec.device_id),
                self.discovery,
                self.slots,
                policy=self.policy,
                adapter=adapter,
                clock=clock,
            )
            expected = spec.expected_interval or profile.default_expected_interval
            self.devices[spec.device_id] = _DeviceState(
                spec, profile, link, expected.total_seconds() if expected else None
            )
        self._bindings = {s.device_id: DeviceBinding(s.device_id, s.patient_id, s.kind) for s in devices}
        self._offline_by_patient: dict[str, set[str]] = {}
        self._cleared_at_start: set[str] = set()
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._start_after = start_after
        self._running = False

    @classmethod
    def from_config(
        cls,
        config: BleConfig,
        *,
        submit: Submit,
        on_finding: OnFinding,
        on_reject: OnReject | None = None,
        clock: Callable[[], datetime] = now_local,
        policy: RetryPolicy | None = None,
        start_after: asyncio.Event | None = None,
    ) -> BleIngress | None:
        """None when no device in the config has a ``ble:`` section."""
        specs = [
            BleDeviceSpec(d.id, p.id, d.kind, d.ble.profile, d.ble.address, d.ble.name, d.expected_interval)
            for p in config.patients
            for d in p.devices
            if d.ble is not None
        ]
        if not specs:
            return None
        sole = {p.id for p in config.patients if p.devices and all(d.ble is not None for d in p.devices)}
        return cls(
            specs,
            submit=submit,
            on_finding=on_finding,
            on_reject=on_reject,
            storage=config.storage.path,
            clock=clock,
            adapter=config.ble.adapter,
            max_connections=config.ble.max_connections,
            policy=policy,
            sole_owner_patients=sole,
            start_after=start_after,
        )

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run every device link until :meth:`close`; then disconnect politely and flush."""
        self._running = True
        if self._start_after is not None:
            waiting = asyncio.ensure_future(self._start_after.wait())
            closing = asyncio.ensure_future(self._closing.wait())
            done, _ = await asyncio.wait(
                {waiting, closing}, timeout=WAIT_FOR_BROKER_S, return_when=asyncio.FIRST_COMPLETED
            )
            waiting.cancel()
            closing.cancel()
            if not done:
                log.warning(
                    "BLE ingress starting without the local broker (not connected after %.0f s)", WAIT_FOR_BROKER_S
                )
        now = time.monotonic()
        for st in self.devices.values():
            st.last_activity = now  # every device gets its full interval after a start
        log.info("BLE ingress starting", extra={"devices": len(self.devices), "max_connections": self.max_connections})
        discovery = asyncio.create_task(self.discovery.run(), name="ble-discovery")
        links = {asyncio.create_task(self._supervise(st), name=f"ble-link-{d}") for d, st in self.devices.items()}
        watchdog = asyncio.create_task(self._watch_offline(), name="ble-offline")
        try:
            await self._closing.wait()
        finally:
            for st in self.devices.values():
                st.link.request_close()
            if links:
                _, still = await asyncio.wait(links, timeout=self.policy.close_timeout_s * 2)
                for t in still:
                    t.cancel()
                await asyncio.gather(*links, return_exceptions=True)
            for t in (discovery, watchdog):
                t.cancel()
            await asyncio.gather(discovery, watchdog, return_exceptions=True)
            self.watermarks.close()
            self._stopped.set()
            log.info("BLE ingress stopped")

    async def close(self) -> None:
        self._closing.set()
        if self._running:
            await self._stopped.wait()
        elif not self._stopped.is_set():
            self.watermarks.close()
            self._stopped.set()

    async def _supervise(self, st: _DeviceState) -> None:
        """A bug in one link must not end BLE for the others: restart it."""
        while not self._closing.is_set():
            try:
                await st.link.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: BLE link crashed; restarting it", st.spec.device_id)
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------ readings

    async def _reading(
        self, device_id: str, reading: AnyReading, received_at: datetime, on_stored: Callable[[], None] | None
    ) -> None:
        result = bind(reading, self._bindings[device_id], received_at, "ble")
        if isinstance(result, Rejected):
            self._reject(device_id, result)
            if on_stored is not None:
                on_stored()
            return
        st = self.devices[device_id]
        st.accepted += 1
        if self.record:
            st.readings.append(result)
        await self._submit(result, on_stored)

    def _reject(self, device_id: str, rejected: Rejected) -> None:
        self.devices[device_id].rejected += 1
        if self._on_reject is not None:
            self._on_reject(rejected)
        else:
            log.warning(
                "rejected BLE value: %s", rejected.detail, extra={"reason": rejected.reason, "device_id": device_id}
            )

    # ------------------------------------------------------------ device_offline

    def _on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        for device_id, st in self.devices.items():
            if st.link.matcher.matches(device, adv):
                self._activity(device_id)

    def _activity(self, device_id: str) -> None:
        st = self.devices[device_id]
        st.last_activity = time.monotonic()
        st.last_activity_at = self.clock()
        patient = st.spec.patient_id
        if st.offline:
            st.offline = False
            offline = self._offline_by_patient.setdefault(patient, set())
            offline.discard(device_id)
            log.info("%s: back after being offline", device_id)
            if not offline:
                self._emit(
                    Finding(
                        patient_id=patient,
                        condition=Condition.DEVICE_OFFLINE,
                        active=False,
                        at=self.clock(),
                        evidence={"device_id": device_id, "back_at": iso(self.clock())},
                    )
                )
        elif (
            patient in self._sole_owner
            and patient not in self._cleared_at_start
            and not self._offline_by_patient.get(patient)
        ):
            # An alert may have been left open by a previous run; clear it once the patient's devices are heard.
            if all(
                self.devices[d].last_activity_at is not None
                for d, s in self.devices.items()
                if s.spec.patient_id == patient
            ):
                self._cleared_at_start.add(patient)
                self._emit(
                    Finding(
                        patient_id=patient,
                        condition=Condition.DEVICE_OFFLINE,
                        active=False,
                        at=self.clock(),
                        evidence={"device_id": device_id},
                    )
                )

    def _emit(self, finding: Finding) -> None:
        task = asyncio.get_running_loop().create_task(self._on_finding(finding))
        task.add_done_callback(_log_failure)

    async def _watch_offline(self) -> None:
        shortest = min((st.expected_s for st in self.devices.values() if st.expected_s), default=60.0)
        tick = min(OFFLINE_CHECK_MAX_S, max(OFFLINE_CHECK_MIN_S, shortest * OFFLINE_CHECK_FRACTION))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for device_id, st in self.devices.items():
                silent = now - st.last_activity
                if st.expected_s is None or st.offline or silent <= st.expected_s:
                    continue
                st.offline = True
                patient = st.spec.patient_id
                offline = self._offline_by_patient.setdefault(patient, set())
                offline.add(device_id)
                log.warning(
                    "%s: silent for %.0f s (expected every %.0f s): device_offline", device_id, silent, st.expected_s
                )
                await self._on_finding(
                    Finding(
                        patient_id=patient,
                        condition=Condition.DEVICE_OFFLINE,
                        at=self.clock(),
                        evidence={
                            "device_id": device_id,
                            "devices": sorted(offline),
                            "profile": st.spec.profile,
                            "silent_s": round(silent, 1),
                            "expected_interval_s": st.expected_s,
                            "last_seen": iso(st.last_activity_at) if st.last_activity_at else None,
                        },
                    )
                )

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for device_id, st in self.devices.items():
            ls = st.link.status
            out[device_id] = {
                "profile": st.spec.profile,
                "connected": ls.connected,
                "connects": ls.connects,
                "disconnects": ls.disconnects,
                "failures": dict(ls.failures),
                "last_error": ls.last_error,
                "offline": st.offline,
                "clock_skew_s": st.profile.clock_skew_s,
                "accepted": st.accepted,
                "rejected": st.rejected,
                "last_activity": iso(st.last_activity_at) if st.last_activity_at else None,
            }
        return out
