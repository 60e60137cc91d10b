"""A mock BlueZ: the ``org.bluez`` D-Bus service bleak's BlueZ backend talks to.

It implements, on any bus (normally a :class:`~simulators.ble.private_bus.PrivateBus`),
exactly what bleak 3.x and bleak-retry-connector call:

* ``org.freedesktop.DBus.ObjectManager`` on ``/``: ``GetManagedObjects`` and the
  ``InterfacesAdded`` / ``InterfacesRemoved`` signals;
* ``org.freedesktop.DBus.Properties``: ``Get``, ``GetAll``, ``Set`` and
  ``PropertiesChanged`` (how BlueZ reports Connected, ServicesResolved, RSSI
  during discovery, and every notification: a change of ``Value``);
* ``org.bluez.Adapter1`` (``hci0``): ``StartDiscovery`` / ``StopDiscovery`` per
  D-Bus client as BlueZ does (a second StartDiscovery from the same client is
  ``InProgress``), ``SetDiscoveryFilter``, ``RemoveDevice``;
* ``org.bluez.Device1``: ``Connect``, ``Disconnect``, ``Pair``;
* ``org.bluez.GattService1``, ``GattCharacteristic1`` (``ReadValue``,
  ``WriteValue``, ``StartNotify``, ``StopNotify``; ``AcquireNotify`` and
  ``AcquireWrite`` answer NotSupported so clients use StartNotify),
  ``GattDescriptor1`` (the CCCD, read-only);
* ``org.bluez.AgentManager1`` on ``/org/bluez`` (accepted, no-op), for tools.

BlueZ behaviours kept because they matter to a client:
* object paths ``/org/bluez/hci0/dev_AA_BB_../serviceXXXX/charXXXX/descXXXX``
  (bleak takes handles from the last four hex digits);
* devices appear on the bus only once seen while discovering; a device that is
  neither connected nor paired is removed a while after it was last seen;
* GATT objects exist only while connected; notification subscriptions are per
  D-Bus client and reset on disconnect (an unbonded peripheral forgets its CCCDs);
* reading a characteristic changes ``Value``, which a StartNotify subscriber
  also receives as if it were a notification;
* a client that leaves the bus loses its discovery session and subscriptions.

Method calls are handled in a raw message handler rather than with
``dbus_fast.service.ServiceInterface`` so replies can be delayed (Connect takes
time) and the caller's unique name is known (discovery sessions are per client).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from simulators.ble.peripheral import (
    CCCD_UUID,
    CONNECT_FAILURES,
    AttError,
    Characteristic,
    Peripheral,
)

log = logging.getLogger("vitalgate.sim.bluez")

BLUEZ_SERVICE = "org.bluez"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
GATT_SERVICE = "org.bluez.GattService1"
GATT_CHARACTERISTIC = "org.bluez.GattCharacteristic1"
GATT_DESCRIPTOR = "org.bluez.GattDescriptor1"
AGENT_MANAGER = "org.bluez.AgentManager1"

ERR_FAILED = "org.bluez.Error.Failed"
ERR_IN_PROGRESS = "org.bluez.Error.InProgress"
ERR_NOT_SUPPORTED = "org.bluez.Error.NotSupported"
ERR_NOT_PERMITTED = "org.bluez.Error.NotPermitted"
ERR_NOT_CONNECTED = "org.bluez.Error.NotConnected"
ERR_DOES_NOT_EXIST = "org.bluez.Error.DoesNotExist"
ERR_INVALID_ARGS = "org.bluez.Error.InvalidArguments"
ERR_UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
ERR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
ERR_UNKNOWN_INTERFACE = "org.freedesktop.DBus.Error.UnknownInterface"
ERR_UNKNOWN_PROPERTY = "org.freedesktop.DBus.Error.UnknownProperty"
ERR_READ_ONLY = "org.freedesktop.DBus.Error.PropertyReadOnly"

# Defaults chosen to make a simulated day pass quickly; a real controller
# advertises every 20 ms - 10 s and BlueZ forgets unseen devices after 30 s.
ADVERT_INTERVAL_S = 0.2
FORGET_AFTER_S = 30.0
CONNECT_TIMEOUT_S = 2.0  # how long a Connect to a device out of range takes to fail
HOUSEKEEPING_INTERVAL_S = 0.25

# The dbus-daemon's own name, and the bus-name-gone signal we follow.
_DBUS = "org.freedesktop.DBus"

Props = dict[str, Variant]
Reply = tuple[str, list[Any]]
Handler = Callable[[str, Message], "Reply | Awaitable[Reply]"]


class BluezError(Exception):
    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text


def device_path(adapter: str, address: str) -> str:
    return f"/org/bluez/{adapter}/dev_{address.upper().replace(':', '_')}"


class MockBlueZ:
    """``await MockBlueZ().start(bus_address)``, then :meth:`add` peripherals."""

    def __init__(
        self,
        *,
        adapter: str = "hci0",
        adapter_address: str = "00:1A:7D:DA:71:13",
        advert_interval_s: float = ADVERT_INTERVAL_S,
        forget_after_s: float = FORGET_AFTER_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.adapter = adapter
        self.adapter_path = f"/org/bluez/{adapter}"
        self.adapter_address = adapter_address
        self.advert_interval_s = advert_interval_s
        self.forget_after_s = forget_after_s
        self.connect_timeout_s = connect_timeout_s
        self.peripherals: dict[str, Peripheral] = {}  # device path -> peripheral
        self.objects: dict[str, dict[str, Props]] = {}
        self.discovery_sessions: set[str] = set()  # unique names of clients discovering
        self.discovery_filters: dict[str, dict[str, Any]] = {}
        self.connected_now = 0
        self.max_connected = 0  # most links up at the same time (a connection-cap check)
        self.method_calls: list[tuple[str, str, str]] = []  # (path, interface, member), for tests
        self._last_seen: dict[str, float] = {}
        self._rssi_flip: dict[str, int] = {}
        self._bus: MessageBus | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._advert_task: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._methods: dict[tuple[str, str], Handler] = {
            (ADAPTER, "StartDiscovery"): self._start_discovery,
            (ADAPTER, "StopDiscovery"): self._stop_discovery,
            (ADAPTER, "SetDiscoveryFilter"): self._set_discovery_filter,
            (ADAPTER, "GetDiscoveryFilters"): lambda p, m: (
                "as",
                [["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable", "Pattern"]],
            ),
            (ADAPTER, "RemoveDevice"): self._remove_device,
            (DEVICE, "Connect"): self._connect,
            (DEVICE, "Disconnect"): self._disconnect,
            (DEVICE, "Pair"): self._pair,
            (DEVICE, "CancelPairing"): lambda p, m: ("", []),
            (GATT_CHARACTERISTIC, "ReadValue"): self._read_value,
            (GATT_CHARACTERISTIC, "WriteValue"): self._write_value,
            (GATT_CHARACTERISTIC, "StartNotify"): self._start_notify,
            (GATT_CHARACTERISTIC, "StopNotify"): self._stop_notify,
            (GATT_CHARACTERISTIC, "AcquireNotify"): self._not_supported,
            (GATT_CHARACTERISTIC, "AcquireWrite"): self._not_supported,
            (GATT_DESCRIPTOR, "ReadValue"): self._read_descriptor,
            (GATT_DESCRIPTOR, "WriteValue"): self._not_permitted_write,
            (AGENT_MANAGER, "RegisterAgent"): lambda p, m: ("", []),
            (AGENT_MANAGER, "UnregisterAgent"): lambda p, m: ("", []),
            (AGENT_MANAGER, "RequestDefaultAgent"): lambda p, m: ("", []),
        }

    # ------------------------------------------------------------ lifecycle

    async def start(self, bus_address: str) -> None:
        bus = MessageBus(bus_address=bus_address)
        await bus.connect()
        self._bus = bus
        bus.add_message_handler(self._on_message)
        await bus.request_name(BLUEZ_SERVICE)
        rule = f"type='signal',sender='{_DBUS}',interface='{_DBUS}',member='NameOwnerChanged'"
        await bus.call(
            Message(
                destination=_DBUS,
                path="/org/freedesktop/DBus",
                interface=_DBUS,
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )
        self._add_object("/org/bluez", {AGENT_MANAGER: {}})
        self._add_object(self.adapter_path, {ADAPTER: self._adapter_props()})
        self._housekeeping = asyncio.get_running_loop().create_task(self._housekeeping_loop())

    async def stop(self) -> None:
        for p in list(self.peripherals.values()):
            self.link_down(p, "adapter stopped")
        for t in [self._advert_task, self._housekeeping, *self._tasks]:
            if t is not None:
                t.cancel()
        await asyncio.gather(
            *[t for t in [self._advert_task, self._housekeeping, *self._tasks] if t], return_exceptions=True
        )
        if self._bus is not None:
            self._bus.disconnect()
            await self._bus.wait_for_disconnect()
            self._bus = None

    async def bus_clients(self) -> list[str]:
        """Unique names connected to the bus (a leak check: one per live client connection)."""
        assert self._bus is not None
        reply = await self._bus.call(
            Message(destination=_DBUS, path="/org/freedesktop/DBus", interface=_DBUS, member="ListNames")
        )
        return sorted(n for n in reply.body[0] if n.startswith(":") and n != self._bus.unique_name)

    def add(self, p: Peripheral) -> Peripheral:
        path = device_path(self.adapter, p.address)
        if path in self.peripherals:
            raise ValueError(f"a peripheral with address {p.address} is already on {self.adapter}")
        handle = 0x000A
        for svc in p.services:
            svc.handle, svc.path = handle, f"{path}/service{handle:04x}"
            handle += 1
            for ch in svc.characteristics:
                ch.handle, ch.path = handle, f"{svc.path}/char{handle:04x}"
                handle += 2 if ch.can_notify else 1  # the CCCD takes the next handle
        p._bluez = self
        self.peripherals[path] = p
        return p

    # ------------------------------------------------------------ object tree + signals

    def _send(self, msg: Message) -> None:
        if self._bus is not None and self._bus.connected:
            self._bus.send(msg)

    def _add_object(self, path: str, interfaces: dict[str, Props]) -> None:
        self.objects[path] = interfaces
        self._send(Message.new_signal("/", OBJECT_MANAGER, "InterfacesAdded", "oa{sa{sv}}", [path, interfaces]))

    def _remove_object(self, path: str) -> None:
        interfaces = self.objects.pop(path, None)
        if interfaces is not None:
            self._send(Message.new_signal("/", OBJECT_MANAGER, "InterfacesRemoved", "oas", [path, list(interfaces)]))

    def _set(self, path: str, interface: str, changed: Props) -> None:
        if path not in self.objects:
            return
        self.objects[path][interface].update(changed)
        self._send(Message.new_signal(path, PROPERTIES, "PropertiesChanged", "sa{sv}as", [interface, changed, []]))

    def emit_value(self, p: Peripheral, ch: Characteristic, value: bytes) -> None:
        """A notification/indication: BlueZ turns it into a ``Value`` PropertiesChanged."""
        ch.value = value
        self._set(ch.path, GATT_CHARACTERISTIC, {"Value": Variant("ay", value)})

    # ------------------------------------------------------------ properties

    def _adapter_props(self) -> Props:
        return {
            "Address": Variant("s", self.adapter_address),
            "AddressType": Variant("s", "public"),
            "Name": Variant("s", "vitalgate-mock"),
            "Alias": Variant("s", "vitalgate-mock"),
            "Class": Variant("u", 0),
            "Powered": Variant("b", True),
            "Discoverable": Variant("b", False),
            "DiscoverableTimeout": Variant("u", 180),
            "Pairable": Variant("b", True),
            "PairableTimeout": Variant("u", 0),
            "Discovering": Variant("b", False),
            "UUIDs": Variant("as", []),
            "Modalias": Variant("s", "usb:v1D6Bp0246d0542"),
            "Roles": Variant("as", ["central", "peripheral"]),
            "ExperimentalFeatures": Variant("as", []),
        }

    def _device_props(self, p: Peripheral) -> Props:
        return {
            "Address": Variant("s", p.address),
            "AddressType": Variant("s", "public"),
            "Name": Variant("s", p.name),
            "Alias": Variant("s", p.name),
            "Adapter": Variant("o", self.adapter_path),
            "Paired": Variant("b", p.paired),
            "Bonded": Variant("b", p.paired),
            "Trusted": Variant("b", False),
            "Blocked": Variant("b", False),
            "LegacyPairing": Variant("b", False),
            "Connected": Variant("b", p.connected),
            "ServicesResolved": Variant("b", False),
            "UUIDs": Variant("as", list(p.advertised_uuids)),
            "RSSI": Variant("n", p.rssi),
            "ManufacturerData": Variant("a{qv}", {}),
            "ServiceData": Variant("a{sv}", {}),
            "AdvertisingFlags": Variant("ay", b"\x06"),
        }

    def _gatt_objects(self, p: Peripheral) -> list[tuple[str, dict[str, Props]]]:
        dev = device_path(self.adapter, p.address)
        out: list[tuple[str, dict[str, Props]]] = []
        for svc in p.services:
            out.append(
                (
                    svc.path,
                    {
                        GATT_SERVICE: {
                            "UUID": Variant("s", svc.uuid),
                            "Device": Variant("o", dev),
                            "Primary": Variant("b", True),
                            "Includes": Variant("ao", []),
                        }
                    },
                )
            )
            for ch in svc.characteristics:
                out.append(
                    (
                        ch.path,
                        {
                            GATT_CHARACTERISTIC: {
                                "UUID": Variant("s", ch.uuid),
                                "Service": Variant("o", svc.path),
                                "Value": Variant("ay", b""),
                                "Notifying": Variant("b", False),
                                "Flags": Variant("as", list(ch.flags)),
                                "MTU": Variant("q", 247),
                            }
                        },
                    )
                )
                if ch.can_notify:
                    out.append(
                        (
                            f"{ch.path}/desc{ch.handle + 1:04x}",
                            {
                                GATT_DESCRIPTOR: {
                                    "UUID": Variant("s", CCCD_UUID),
                                    "Characteristic": Variant("o", ch.path),
                                    "Value": Variant("ay", b""),
                                    "Flags": Variant("as", ["read", "write"]),
                                }
                            },
                        )
                    )
        return out

    # ------------------------------------------------------------ discovery

    def _discovering_changed(self) -> None:
        on = bool(self.discovery_sessions)
        self._set(self.adapter_path, ADAPTER, {"Discovering": Variant("b", on)})
        if on and self._advert_task is None:
            self._advert_task = asyncio.get_running_loop().create_task(self._advertise_loop())
        elif not on and self._advert_task is not None:
            self._advert_task.cancel()
            self._advert_task = None

    async def _advertise_loop(self) -> None:
        while True:
            for path, p in list(self.peripherals.items()):
                if p.in_range and p.advertising and not p.connected:
                    self._seen(path, p)
            await asyncio.sleep(self.advert_interval_s)

    def _seen(self, path: str, p: Peripheral) -> None:
        """One advertisement received: the device object appears, or its RSSI changes."""
        self._last_seen[path] = time.monotonic()
        if path not in self.objects:
            self._add_object(path, {DEVICE: self._device_props(p)})
            return
        # BlueZ signals only changes; flip one dB so every advert is visible to scanners.
        flip = self._rssi_flip[path] = self._rssi_flip.get(path, 0) ^ 1
        self._set(path, DEVICE, {"RSSI": Variant("n", p.rssi - flip)})

    def forget(self, p: Peripheral) -> None:
        """Drop the device object (as BlueZ does for temporary devices after a while)."""
        path = device_path(self.adapter, p.address)
        if not p.connected and not p.paired:
            self._remove_object(path)
            self._last_seen.pop(path, None)

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            now = time.monotonic()
            for path, p in list(self.peripherals.items()):
                seen = self._last_seen.get(path)
                if path in self.objects and seen is not None and now - seen > self.forget_after_s:
                    self.forget(p)

    # ------------------------------------------------------------ links

    def link_up(self, p: Peripheral) -> None:
        path = device_path(self.adapter, p.address)
        p.connected = True
        p.stats.connects += 1
        self.connected_now += 1
        self.max_connected = max(self.max_connected, self.connected_now)
        for obj_path, ifaces in self._gatt_objects(p):
            self._add_object(obj_path, ifaces)
        self._set(path, DEVICE, {"Connected": Variant("b", True)})
        self._set(path, DEVICE, {"ServicesResolved": Variant("b", True)})
        p.on_connect()

    def link_down(self, p: Peripheral, reason: str) -> None:
        if not p.connected:
            return
        path = device_path(self.adapter, p.address)
        log.debug("%s: link down (%s)", p.name, reason)
        p.connected = False
        p.stats.disconnects += 1
        self.connected_now -= 1
        p.cancel_link_tasks()
        for svc in p.services:
            for ch in svc.characteristics:
                ch.subscribers.clear()
        self._set(path, DEVICE, {"ServicesResolved": Variant("b", False)})
        self._set(path, DEVICE, {"Connected": Variant("b", False)})
        for obj_path, _ in reversed(self._gatt_objects(p)):
            self._remove_object(obj_path)
        self._last_seen[path] = time.monotonic()
        p.on_disconnect()

    # ------------------------------------------------------------ message dispatch

    def _on_message(self, msg: Message) -> Message | bool | None:
        if msg.message_type is MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == _DBUS:
                name, _old, new = msg.body
                if not new and name.startswith(":"):
                    self._client_gone(name)
            return None
        if msg.message_type is not MessageType.METHOD_CALL or msg.path is None:
            return None
        if not (msg.path == "/" or msg.path == "/org/bluez" or msg.path.startswith("/org/bluez/")):
            return None
        self.method_calls.append((msg.path, msg.interface or "", msg.member or ""))
        try:
            result = self._dispatch(msg)
        except BluezError as e:
            return Message.new_error(msg, e.name, e.text)
        if isinstance(result, tuple):
            return Message.new_method_return(msg, result[0], result[1])
        task = asyncio.get_running_loop().create_task(self._reply_later(msg, result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _reply_later(self, msg: Message, pending: Awaitable[Reply]) -> None:
        try:
            signature, body = await pending
            reply = Message.new_method_return(msg, signature, body)
        except BluezError as e:
            reply = Message.new_error(msg, e.name, e.text)
        except Exception as e:  # a bug in a simulated device must not hang the caller
            log.exception("mock bluez: %s.%s failed", msg.interface, msg.member)
            reply = Message.new_error(msg, ERR_FAILED, f"mock error: {e}")
        self._send(reply)

    def _dispatch(self, msg: Message) -> Reply | Awaitable[Reply]:
        path, iface, member = msg.path or "", msg.interface or "", msg.member or ""
        if iface == OBJECT_MANAGER and member == "GetManagedObjects":
            if path != "/":
                raise BluezError(ERR_UNKNOWN_METHOD, f"no ObjectManager at {path}")
            return "a{oa{sa{sv}}}", [{p: dict(i) for p, i in self.objects.items()}]
        if iface == INTROSPECTABLE and member == "Introspect":
            return "s", [self._introspect(path)]
        if path not in self.objects:
            raise BluezError(ERR_UNKNOWN_OBJECT, f"no object at {path}")
        if iface == PROPERTIES:
            return self._properties(path, member, msg.body)
        handler = self._methods.get((iface, member))
        if handler is None or iface not in self.objects[path]:
            raise BluezError(ERR_UNKNOWN_METHOD, f"{iface}.{member} is not implemented at {path}")
        return handler(path, msg)

    def _properties(self, path: str, member: str, body: list[Any]) -> Reply:
        iface = body[0]
        props = self.objects[path].get(iface)
        if props is None:
            raise BluezError(ERR_UNKNOWN_INTERFACE, f"{iface} not at {path}")
        if member == "GetAll":
            return "a{sv}", [dict(props)]
        name = body[1]
        if name not in props:
            raise BluezError(ERR_UNKNOWN_PROPERTY, f"{iface}.{name}")
        if member == "Get":
            return "v", [props[name]]
        if member == "Set":
            writable = {
                (DEVICE, "Trusted"),
                (DEVICE, "Blocked"),
                (DEVICE, "Alias"),
                (ADAPTER, "Powered"),
                (ADAPTER, "Discoverable"),
                (ADAPTER, "Pairable"),
                (ADAPTER, "Alias"),
            }
            if (iface, name) not in writable:
                raise BluezError(ERR_READ_ONLY, f"{iface}.{name} is read-only")
            self._set(path, iface, {name: body[2]})
            return "", []
        raise BluezError(ERR_UNKNOWN_METHOD, f"Properties.{member}")

    def _introspect(self, path: str) -> str:
        prefix = path.rstrip("/") + "/"
        children = sorted({p[len(prefix) :].split("/")[0] for p in self.objects if p.startswith(prefix)})
        ifaces = "".join(f'<interface name="{i}"/>' for i in self.objects.get(path, {}))
        nodes = "".join(f'<node name="{c}"/>' for c in children)
        return f'<node><interface name="{PROPERTIES}"/><interface name="{INTROSPECTABLE}"/>{ifaces}{nodes}</node>'

    def _peripheral_at(self, path: str) -> Peripheral:
        dev = "/".join(path.split("/")[:5])
        p = self.peripherals.get(dev)
        if p is None:
            raise BluezError(ERR_UNKNOWN_OBJECT, f"no device at {dev}")
        return p

    def _char_at(self, path: str) -> tuple[Peripheral, Characteristic]:
        p = self._peripheral_at(path)
        for svc in p.services:
            for ch in svc.characteristics:
                if ch.path == path:
                    return p, ch
        raise BluezError(ERR_UNKNOWN_OBJECT, f"no characteristic at {path}")

    def _client_gone(self, name: str) -> None:
        if name in self.discovery_sessions:
            self.discovery_sessions.discard(name)
            self.discovery_filters.pop(name, None)
            self._discovering_changed()
        for p in self.peripherals.values():
            for svc in p.services:
                for ch in svc.characteristics:
                    if name in ch.subscribers:
                        ch.subscribers.discard(name)
                        if not ch.subscribers and p.connected:
                            self._set(ch.path, GATT_CHARACTERISTIC, {"Notifying": Variant("b", False)})
                            p.on_unsubscribe(ch)

    # ------------------------------------------------------------ Adapter1

    def _start_discovery(self, path: str, msg: Message) -> Reply:
        sender = msg.sender or ""
        if sender in self.discovery_sessions:
            raise BluezError(ERR_IN_PROGRESS, "Operation already in progress")
        self.discovery_sessions.add(sender)
        self._discovering_changed()
        return "", []

    def _stop_discovery(self, path: str, msg: Message) -> Reply:
        sender = msg.sender or ""
        if sender not in self.discovery_sessions:
            raise BluezError(ERR_FAILED, "No discovery started")
        self.discovery_sessions.discard(sender)
        self._discovering_changed()
        return "", []

    def _set_discovery_filter(self, path: str, msg: Message) -> Reply:
        self.discovery_filters[msg.sender or ""] = {k: v.value for k, v in msg.body[0].items()}
        return "", []

    def _remove_device(self, path: str, msg: Message) -> Reply:
        dev = msg.body[0]
        p = self.peripherals.get(dev)
        if p is None or dev not in self.objects:
            raise BluezError(ERR_DOES_NOT_EXIST, "Does Not Exist")
        self.link_down(p, "removed")
        p.paired = False
        self._remove_object(dev)
        return "", []

    # ------------------------------------------------------------ Device1

    async def _connect(self, path: str, msg: Message) -> Reply:
        p = self._peripheral_at(path)
        if p.connected:
            return "", []
        if p.connecting:
            raise BluezError(ERR_IN_PROGRESS, "In Progress")
        p.connecting = True
        try:
            failure = p.take_connect_failure()
            if failure is not None:
                await asyncio.sleep(p.connect_delay_s)
                p.stats.failed_connects += 1
                raise BluezError(*CONNECT_FAILURES[failure])
            if not p.in_range:
                await asyncio.sleep(self.connect_timeout_s)
                p.stats.failed_connects += 1
                raise BluezError(ERR_FAILED, "Software caused connection abort")
            await asyncio.sleep(p.connect_delay_s)
            if not p.in_range:  # left while we were connecting
                p.stats.failed_connects += 1
                raise BluezError(ERR_FAILED, "Software caused connection abort")
            self.link_up(p)
        finally:
            p.connecting = False
        return "", []

    def _disconnect(self, path: str, msg: Message) -> Reply:
        # Like bluetoothd: also fine when not connected (it cancels a pending connect).
        self.link_down(self._peripheral_at(path), "local host")
        return "", []

    def _pair(self, path: str, msg: Message) -> Reply:
        p = self._peripheral_at(path)
        p.paired = True
        self._set(path, DEVICE, {"Paired": Variant("b", True), "Bonded": Variant("b", True)})
        return "", []

    # ------------------------------------------------------------ GattCharacteristic1

    def _not_supported(self, path: str, msg: Message) -> Reply:
        raise BluezError(ERR_NOT_SUPPORTED, "Operation is not supported")

    def _not_permitted_write(self, path: str, msg: Message) -> Reply:
        raise BluezError(ERR_NOT_PERMITTED, "Write not permitted")

    def _read_value(self, path: str, msg: Message) -> Reply:
        p, ch = self._char_at(path)
        if not p.connected:
            raise BluezError(ERR_FAILED, "Not connected")
        if "read" not in ch.flags:
            raise BluezError(ERR_NOT_PERMITTED, "Read not permitted")
        try:
            value = bytes(p.on_read(ch))
        except AttError as e:
            raise BluezError(ERR_FAILED, f"Operation failed with ATT error: 0x{e.code:02x}") from None
        p.stats.reads[ch.uuid] += 1
        if value != ch.value:
            # BlueZ updates the cached Value on a read, so StartNotify subscribers see it too.
            self.emit_value(p, ch, value)
        return "ay", [value]

    async def _write_value(self, path: str, msg: Message) -> Reply:
        p, ch = self._char_at(path)
        if not p.connected:
            raise BluezError(ERR_FAILED, "Not connected")
        data, options = bytes(msg.body[0]), msg.body[1]
        kind = options["type"].value if "type" in options else "request"
        needed = "write-without-response" if kind == "command" else "write"
        if needed not in ch.flags and "write" not in ch.flags:
            raise BluezError(ERR_NOT_PERMITTED, "Write not permitted")
        p.stats.writes.append((ch.uuid, data))
        try:
            await p.on_write(ch, data)
        except AttError as e:
            raise BluezError(ERR_FAILED, f"Operation failed with ATT error: 0x{e.code:02x}") from None
        return "", []

    def _start_notify(self, path: str, msg: Message) -> Reply:
        p, ch = self._char_at(path)
        if not ch.can_notify:
            raise BluezError(ERR_NOT_SUPPORTED, "Operation is not supported")
        if not p.connected:
            raise BluezError(ERR_FAILED, "Not connected")
        sender = msg.sender or ""
        if sender in ch.subscribers:
            raise BluezError(ERR_IN_PROGRESS, "In Progress")
        first = not ch.subscribers
        ch.subscribers.add(sender)
        p.stats.subscribes[ch.uuid] += 1
        if first:
            self._set(ch.path, GATT_CHARACTERISTIC, {"Notifying": Variant("b", True)})
            # Let the StartNotify reply leave before the device reacts (it may notify at once).
            asyncio.get_running_loop().call_soon(self._subscribed, p, ch)
        return "", []

    def _subscribed(self, p: Peripheral, ch: Characteristic) -> None:
        if p.connected and ch.notifying:
            p.on_subscribe(ch)

    def _stop_notify(self, path: str, msg: Message) -> Reply:
        p, ch = self._char_at(path)
        sender = msg.sender or ""
        if sender not in ch.subscribers:
            raise BluezError(ERR_FAILED, "No notify session started")
        ch.subscribers.discard(sender)
        if not ch.subscribers:
            self._set(ch.path, GATT_CHARACTERISTIC, {"Notifying": Variant("b", False)})
            p.on_unsubscribe(ch)
        return "", []

    def _read_descriptor(self, path: str, msg: Message) -> Reply:
        p, ch = self._char_at(path.rsplit("/", 1)[0])
        if not ch.notifying:
            value = b"\x00\x00"
        else:
            value = b"\x02\x00" if ch.indicates and "notify" not in ch.flags else b"\x01\x00"
        return "ay", [value]
