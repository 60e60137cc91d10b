"""A fleet of virtual BLE devices on a private bus: what a developer runs instead of hardware.

:class:`BleFleet` starts a private ``dbus-daemon`` and the mock BlueZ, creates
one virtual device for every ``ble:`` device in a gateway config (same
address, or the configured advertised name), and plays a simple day: cuffs
measure and meters record every ``every`` seconds (meters start with a few
stored records, as after a night out of range), straps and patches stream,
and every ``dropouts`` seconds a random device drops its link or walks out of
range for a while. Point a gateway at it with ``DBUS_SYSTEM_BUS_ADDRESS``
(:attr:`address`); ``vitalgate ble-devices --config gateway.yaml`` prints it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from datetime import timedelta
from typing import Any

from simulators.ble.bluez import MockBlueZ
from simulators.ble.peripheral import Peripheral
from simulators.ble.private_bus import PrivateBus
from simulators.ble.virtual_devices import (
    BloodPressureCuff,
    GlucoseMeter,
    HeartRateStrap,
    PolarH10,
    VendorEcgPatch,
)

log = logging.getLogger("vitalgate.sim.ble")

OUT_OF_RANGE_S = (5.0, 20.0)  # how long a walk out of range lasts


def address_for(device_id: str) -> str:
    """A stable made-up public address for a device configured by name only."""
    h = hashlib.blake2b(device_id.encode(), digest_size=3).hexdigest().upper()
    return f"C0:26:DA:{h[0:2]}:{h[2:4]}:{h[4:6]}"


def make_device(
    profile: str, device_id: str, address: str | None, name: str | None, rng: random.Random, **kw: Any
) -> Peripheral:
    addr = address or address_for(device_id)
    named: dict[str, Any] = {"name": name} if name else {}  # else each device's own default name
    if profile == "blood_pressure":
        return BloodPressureCuff(addr, disconnect_after_s=kw.get("linger_s", 2.0), **named)
    if profile == "glucose":
        meter = GlucoseMeter(addr, disconnect_after_s=kw.get("linger_s", 2.0), **named)
        for hours_ago in (30, 20, 8):  # stored while the gateway could not hear the meter
            when = meter.device_now().replace(microsecond=0) - timedelta(hours=hours_ago)
            meter.add_record(round(rng.uniform(4.8, 8.5), 1), when=when, meal=rng.choice(["fasting", "postprandial"]))
        return meter
    if profile == "heart_rate":
        return HeartRateStrap(addr, bpm=rng.randint(60, 90), **named)
    if profile == "vendor_ecg":
        return VendorEcgPatch(addr, hr_bpm=rng.uniform(60, 85), seed=rng.randint(0, 9999), **named)
    if profile == "polar_h10_ecg":
        return PolarH10(addr, seed=rng.randint(0, 9999), **named)
    raise ValueError(f"no virtual device for profile {profile!r}")


class BleFleet:
    def __init__(self, *, seed: int = 1, every_s: float = 30.0, dropouts_s: float | None = 60.0) -> None:
        self.rng = random.Random(seed)
        self.every_s = every_s
        self.dropouts_s = dropouts_s
        self.bus = PrivateBus()
        self.bluez = MockBlueZ()
        self.devices: dict[str, Peripheral] = {}  # device id -> virtual device
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def address(self) -> str:
        return self.bus.address

    async def start(self) -> str:
        self.bus.start()
        await self.bluez.start(self.bus.address)
        return self.bus.address

    def add(self, device_id: str, device: Peripheral) -> Peripheral:
        self.devices[device_id] = self.bluez.add(device)
        return device

    def add_from_config(self, config: Any) -> list[Peripheral]:
        """One virtual device per ``ble:`` device in a GatewayConfig."""
        made = []
        for p in config.patients:
            for d in p.devices:
                if d.ble is not None:
                    made.append(self.add(d.id, make_device(d.ble.profile, d.id, d.ble.address, d.ble.name, self.rng)))
        return made

    def play(self) -> None:
        """Start the measurement schedule and the dropouts (stopped by :meth:`stop`)."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._measure()))
        if self.dropouts_s:
            self._tasks.append(loop.create_task(self._dropouts()))

    async def _measure(self) -> None:
        while True:
            await asyncio.sleep(self.every_s * self.rng.uniform(0.8, 1.2))
            for dev in self.devices.values():
                if isinstance(dev, BloodPressureCuff):
                    dev.measure(self.rng.randint(118, 150), self.rng.randint(72, 95), self.rng.randint(60, 88))
                elif isinstance(dev, GlucoseMeter):
                    dev.add_record(round(self.rng.uniform(4.5, 9.0), 1), meal=self.rng.choice(["fasting", "casual"]))

    async def _dropouts(self) -> None:
        assert self.dropouts_s
        while True:
            await asyncio.sleep(self.dropouts_s * self.rng.uniform(0.5, 1.5))
            connected = [(i, d) for i, d in self.devices.items() if d.connected]
            if not connected:
                continue
            device_id, dev = self.rng.choice(connected)
            if self.rng.random() < 0.5:
                log.info("%s: link dropped", device_id)
                dev.drop_link()
            else:
                away = self.rng.uniform(*OUT_OF_RANGE_S)
                log.info("%s: out of range for %.0f s", device_id, away)
                dev.leave()
                await asyncio.sleep(away)
                dev.come_back()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bluez.stop()
        await release_bleak_manager()
        self.bus.stop()


async def release_bleak_manager() -> None:
    """Close bleak's BlueZ manager connection in this event loop before its bus goes away.

    Only for in-process use (tests, the demo): bleak keeps one manager per loop
    connected to the "system" bus; when that bus is our private daemon and we
    stop it, the manager would log the lost connection.
    """
    from bleak.backends.bluezdbus import manager as bluez_manager

    mgr = bluez_manager._global_instances.pop(asyncio.get_running_loop(), None)
    bus = getattr(mgr, "_bus", None)
    if mgr is None or bus is None:
        return
    bus.disconnect()
    try:
        await asyncio.wait_for(bus.wait_for_disconnect(), 2)
    except Exception:
        pass
    watcher = getattr(mgr, "_bus_watcher_task", None)  # bleak >= 3.1 watches its bus in a task
    if watcher is not None:
        await asyncio.gather(watcher, return_exceptions=True)


# ---------------------------------------------------------------- `vitalgate demo --ble`


def demo_patients() -> list[dict[str, Any]]:
    """Two extra demo patients whose devices are BLE (config dicts, validated by the demo's config)."""
    return [
        {
            "id": "p-ble1",
            "devices": [
                {
                    "id": "bp-ble1",
                    "kind": "blood_pressure",
                    "ble": {"address": "C0:26:DA:B1:00:01", "profile": "blood_pressure"},
                },
                {"id": "glu-ble1", "kind": "glucose", "ble": {"address": "C0:26:DA:B1:00:02", "profile": "glucose"}},
            ],
        },
        {
            "id": "p-ble2",
            "devices": [
                {"id": "ecg-ble2", "kind": "ecg", "ble": {"address": "C0:26:DA:B2:00:01", "profile": "vendor_ecg"}},
            ],
        },
    ]


async def start_demo_fleet() -> BleFleet:
    """The virtual devices of :func:`demo_patients`, doing what makes a demo worth watching.

    A cuff with a hypertensive crisis confirmed by a repeat 2 min later; a meter
    holding last night's readings (one severe low, back-filled: a follow-up, not
    an emergency) plus a fresh mild low; a patch in AF at 118 bpm on 15 % battery.
    """
    fleet = BleFleet(dropouts_s=None)
    await fleet.start()
    cuff = BloodPressureCuff("C0:26:DA:B1:00:01", disconnect_after_s=2.0)
    now = cuff.device_now().replace(microsecond=0)
    cuff.measure(188, 118, 96, when=now - timedelta(minutes=2))
    cuff.measure(192, 121, 98, when=now)
    meter = GlucoseMeter("C0:26:DA:B1:00:02", disconnect_after_s=2.0)
    meter.add_record(6.1, when=now - timedelta(hours=14), meal="postprandial")
    meter.add_record(2.6, when=now - timedelta(hours=6), meal="bedtime")
    meter.add_record(3.5, when=now, meal="fasting")
    patch = VendorEcgPatch("C0:26:DA:B2:00:01", hr_bpm=118, battery=15, seed=7)
    patch.synth.set_rhythm("af", 118)
    for device_id, dev in (("bp-ble1", cuff), ("glu-ble1", meter), ("ecg-ble2", patch)):
        fleet.add(device_id, dev)
    return fleet
