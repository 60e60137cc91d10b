"""The GATT model of one virtual BLE device, independent of D-Bus.

A :class:`Peripheral` holds services and characteristics (full lower-case
128-bit UUIDs, BlueZ flag names such as ``"read"``, ``"notify"``,
``"indicate"``), and the behaviour hooks a real device has: what happens on
connect, on a write, when the central subscribes. :class:`~simulators.ble.bluez.MockBlueZ`
puts it on the bus as BlueZ would (``org.bluez.Device1``, ``GattService1``,
``GattCharacteristic1``, ``GattDescriptor1``).

Fault injection lives here too, because it is a property of the device or
its radio link: refuse the next connects, drop the link, leave radio range.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.gatt_codecs import uuid16

log = logging.getLogger("vitalgate.sim.ble")

CCCD_UUID = uuid16(0x2902)

# Injected connect failures -> (BlueZ D-Bus error name, message). The texts are
# ones bleak and bleak-retry-connector see in the field; "out_of_slots" uses the
# wording bleak-retry-connector classifies as "no free connection slot".
CONNECT_FAILURES: dict[str, tuple[str, str]] = {
    "abort": ("org.bluez.Error.Failed", "Software caused connection abort"),
    "out_of_slots": ("org.bluez.Error.Failed", "No available connection slot on hci0"),
    "in_progress": ("org.bluez.Error.InProgress", "In Progress"),
    "not_ready": ("org.bluez.Error.NotReady", "Resource Not Ready"),
}


class AttError(Exception):
    """An ATT error a peripheral answers a read or write with (BlueZ relays it as
    ``org.bluez.Error.Failed: Operation failed with ATT error: 0x..``)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"ATT error 0x{code:02x}")
        self.code = code


ATT_CCCD_IMPROPERLY_CONFIGURED = 0xFD
ATT_PROCEDURE_IN_PROGRESS = 0xFE
ATT_OUT_OF_RANGE = 0xFF


@dataclass(eq=False)
class Characteristic:
    uuid: str
    flags: tuple[str, ...]
    value: bytes = b""
    # Filled in when the peripheral is added to the mock.
    handle: int = 0
    path: str = ""
    # D-Bus unique names of clients that called StartNotify (BlueZ tracks them per client).
    subscribers: set[str] = field(default_factory=set)

    @property
    def notifying(self) -> bool:
        return bool(self.subscribers)

    @property
    def can_notify(self) -> bool:
        return "notify" in self.flags or "indicate" in self.flags

    @property
    def indicates(self) -> bool:
        return "indicate" in self.flags


@dataclass(eq=False)
class Service:
    uuid: str
    characteristics: list[Characteristic]
    handle: int = 0
    path: str = ""


@dataclass
class PeripheralStats:
    """What a test or a developer wants to know about the traffic a device saw."""

    connects: int = 0
    disconnects: int = 0
    failed_connects: int = 0
    subscribes: Counter[str] = field(default_factory=Counter)  # uuid -> StartNotify calls
    writes: list[tuple[str, bytes]] = field(default_factory=list)  # (uuid, value)
    reads: Counter[str] = field(default_factory=Counter)
    notifications: Counter[str] = field(default_factory=Counter)  # uuid -> values delivered


class PeripheralHost(Protocol):
    """What a peripheral tells the BlueZ that carries it (simulators/ble/bluez.py's MockBlueZ)."""

    def emit_value(self, p: Peripheral, ch: Characteristic, value: bytes) -> None: ...
    def link_down(self, p: Peripheral, reason: str) -> None: ...
    def forget(self, p: Peripheral) -> None: ...


class Peripheral:
    """One virtual device. Subclasses add services in ``__init__`` and override the hooks."""

    def __init__(self, address: str, name: str, *, advertised_uuids: tuple[str, ...] = (), rssi: int = -60) -> None:
        self.address = address.upper()
        self.name = name
        self.advertised_uuids = advertised_uuids
        self.rssi = rssi
        self.services: list[Service] = []
        self.in_range = True
        self.advertising = True
        self.connected = False
        self.connecting = False
        self.paired = False
        self.connect_delay_s = 0.0
        self.stats = PeripheralStats()
        self._connect_failures: list[str] = []
        self._bluez: PeripheralHost | None = None  # set by the MockBlueZ that carries it
        self._link_tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ GATT table

    def add_service(self, uuid: str, *chars: Characteristic) -> Service:
        svc = Service(uuid, list(chars))
        self.services.append(svc)
        return svc

    def char(self, uuid: str) -> Characteristic:
        for svc in self.services:
            for ch in svc.characteristics:
                if ch.uuid == uuid:
                    return ch
        raise KeyError(f"{self.name}: no characteristic {uuid}")

    def has_char(self, uuid: str) -> bool:
        return any(ch.uuid == uuid for svc in self.services for ch in svc.characteristics)

    # ------------------------------------------------------------ fault injection

    def fail_next_connects(self, n: int, kind: str = "abort") -> None:
        """The next ``n`` Connect calls fail with ``kind`` (see CONNECT_FAILURES)."""
        if kind not in CONNECT_FAILURES:
            raise ValueError(f"unknown failure kind {kind!r}; use one of {sorted(CONNECT_FAILURES)}")
        self._connect_failures.extend([kind] * n)

    def take_connect_failure(self) -> str | None:
        return self._connect_failures.pop(0) if self._connect_failures else None

    def drop_link(self) -> None:
        """The radio link drops (supervision timeout): the central sees a remote disconnect."""
        if self._bluez is not None:
            self._bluez.link_down(self, "supervision timeout")

    def leave(self) -> None:
        """Walk out of radio range: drop the link, stop being seen; BlueZ forgets the device."""
        self.in_range = False
        if self._bluez is not None:
            self._bluez.link_down(self, "out of range")
            self._bluez.forget(self)

    def come_back(self) -> None:
        """Back in range: advertisements resume (a scanning central rediscovers it)."""
        self.in_range = True

    # ------------------------------------------------------------ traffic

    def notify(self, uuid: str, value: bytes) -> bool:
        """Send a notification or indication; True if a subscribed central received it.

        For an indication True also means confirmed: BlueZ confirms indications
        itself as soon as they arrive, before any application sees them.
        """
        if self._bluez is None or not self.connected:
            return False
        ch = self.char(uuid)
        if not ch.notifying:
            return False
        self._bluez.emit_value(self, ch, bytes(value))
        self.stats.notifications[uuid] += 1
        return True

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` for as long as the current connection lasts."""
        task = asyncio.get_running_loop().create_task(coro)
        self._link_tasks.add(task)
        task.add_done_callback(self._link_tasks.discard)
        return task

    def cancel_link_tasks(self) -> None:
        for t in list(self._link_tasks):
            t.cancel()
        self._link_tasks.clear()

    def disconnect_self(self) -> None:
        """The device ends the connection itself (a meter powering off after a transfer)."""
        if self._bluez is not None:
            self._bluez.link_down(self, "remote user terminated")

    # ------------------------------------------------------------ hooks

    def on_connect(self) -> None:
        """The central connected (GATT objects are on the bus)."""

    def on_disconnect(self) -> None:
        """The link is gone, whoever ended it; subscriptions are already reset."""

    def on_subscribe(self, ch: Characteristic) -> None:
        """A central enabled notifications/indications on ``ch``."""

    def on_unsubscribe(self, ch: Characteristic) -> None:
        """The last central disabled notifications on ``ch``."""

    def on_read(self, ch: Characteristic) -> bytes:
        return ch.value

    async def on_write(self, ch: Characteristic, data: bytes) -> None:
        """A write request; raise :class:`AttError` to refuse it."""
        ch.value = data
