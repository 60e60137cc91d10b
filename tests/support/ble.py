"""Shared pieces of the BLE tests: a private dbus-daemon with the mock BlueZ, and a recording BleIngress.

bleak's real BlueZ backend is used unchanged: it finds the bus through
``DBUS_SYSTEM_BUS_ADDRESS`` (set per test) and talks to the mock ``org.bluez``.
Import the fixtures into a test module with the folder's conftest (``from tests.support.ble import bluez``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.ble.connection import RetryPolicy
from gateway.ble.ingress import BleDeviceSpec, BleIngress
from simulators.ble.bluez import MockBlueZ
from simulators.ble.fleet import release_bleak_manager
from simulators.ble.private_bus import PrivateBus, dbus_daemon_path
from stream.models import Accepted, Condition, DeviceKind, Finding, Rejected

pytestmark = pytest.mark.ble

# Fast radio for tests: adverts every 50 ms, forgotten devices after 1 s.
ADVERT_S = 0.05


@pytest.fixture
async def bluez(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MockBlueZ]:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed (Debian package 'dbus'): BLE tests need a private D-Bus")
    bus = PrivateBus()
    bus.start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    mock = MockBlueZ(advert_interval_s=ADVERT_S, forget_after_s=1.0, connect_timeout_s=0.3)
    await mock.start(bus.address)
    try:
        yield mock
    finally:
        await mock.stop()
        await release_bleak_manager()
        bus.stop()


class Recorder:
    """Stands in for the stream core and the dispatcher; records what the BLE ingress hands on."""

    def __init__(self) -> None:
        self.accepted: list[Accepted] = []
        self.findings: list[Finding] = []
        self.rejected: list[Rejected] = []

    async def submit(self, acc: Accepted, on_stored: Callable[[], None] | None = None) -> None:
        self.accepted.append(acc)
        if on_stored is not None:
            on_stored()

    async def on_finding(self, f: Finding) -> None:
        self.findings.append(f)

    def of(self, device_id: str, kind: str | None = None) -> list[Accepted]:
        return [a for a in self.accepted if a.device_id == device_id and (kind is None or a.reading.kind == kind)]

    def of_kind(self, kind: str) -> list[Accepted]:
        return [a for a in self.accepted if a.reading.kind == kind]

    def offline(self, patient_id: str) -> list[bool]:
        """device_offline raise (True) / clear (False) sequence, ignoring the start-up clears."""
        out: list[bool] = []
        for f in self.findings:
            if f.patient_id == patient_id and f.condition is Condition.DEVICE_OFFLINE:
                if f.active or out:
                    out.append(f.active)
        return out


def spec(
    device_id: str,
    profile: str,
    address: str | None = None,
    *,
    patient: str = "p-0001",
    name: str | None = None,
    expected_interval: timedelta | None = None,
) -> BleDeviceSpec:
    kind = {"blood_pressure": DeviceKind.BLOOD_PRESSURE, "glucose": DeviceKind.GLUCOSE}.get(profile, DeviceKind.ECG)
    return BleDeviceSpec(device_id, patient, kind, profile, address, name, expected_interval)


@contextlib.asynccontextmanager
async def running(
    specs: list[BleDeviceSpec], storage: Path, rec: Recorder | None = None, **kw: Any
) -> AsyncIterator[tuple[BleIngress, Recorder]]:
    rec = rec or Recorder()
    kw.setdefault("policy", RetryPolicy.fast())
    ingress = BleIngress(
        specs,
        submit=rec.submit,
        on_finding=rec.on_finding,
        on_reject=rec.rejected.append,
        storage=storage,
        record=True,
        **kw,
    )
    task = asyncio.create_task(ingress.run())
    try:
        yield ingress, rec
    finally:
        await asyncio.wait_for(ingress.close(), 15)
        await task


async def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
