"""Keeping BLE devices connected: discovery, retry by error class, the connection cap, re-subscription.

This is the one piece of code every BLE profile uses (STYLE.md, bleak-retry-connector):

* :class:`Discovery` - one shared ``BleakScanner``, running only while some
  link is looking for its device. BlueZ keeps one discovery session per D-Bus
  client, so a second ``StartDiscovery`` from the same process fails with
  ``InProgress``; links must share a scanner instead of each calling
  ``BleakScanner.find_device_by_address``.
* :class:`DeviceLink` - one configured device: wait for an advertisement,
  take a connection slot (a semaphore caps simultaneous links), connect with
  ``bleak_retry_connector.establish_connection`` (which retries a few times
  with its own short backoffs), and when that gives up, back off by error
  class before looking again. After **every** connect it reads what the
  profile wants read, then subscribes to **every** notify/indicate
  characteristic the profile lists - a reconnect never silently loses
  notifications - and then runs the profile's procedures (RACP back-fill, PMD
  start, clock write). A disconnect callback ends the session; the link goes
  back to discovery and needs a fresh advertisement before reconnecting.

Notifications arrive in bleak's callback (a plain function on the event
loop); they are stamped with the gateway receive time and put on a bounded
per-link queue, and one consumer task hands them to the profile in arrival
order. When that queue is full (4096 values; ~7 minutes of a 10-frames/s ECG
patch whose readings cannot be stored) the newest value is dropped and counted
as rejected ``ble_queue_full``: the radio cannot be paused.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakDBusError, BleakDeviceNotFoundError, BleakError
from bleak_retry_connector import (
    BleakAbortedError,
    BleakClientWithServiceCache,
    BleakConnectionError,
    BleakNotFoundError,
    BleakOutOfConnectionSlotsError,
    establish_connection,
)

from stream.models import Rejected
from stream.retry_backoff import capped_exponential

log = logging.getLogger("vitalgate.ble")

# ---------------------------------------------------------------- named constants

# Most controllers manage 5 (CSR) to 7 (Broadcom) LE links; stay at the safe end.
MAX_SIMULTANEOUS_CONNECTIONS = 5
# establish_connection attempts per try; it backs off 0.1-4 s between them by error class.
CONNECT_ATTEMPTS = 4
# Our backoff after establish_connection gives up, by error class (seconds, doubled
# per consecutive failure up to BACKOFF_MAX_S, +-BACKOFF_JITTER so devices do not
# retry in lock-step).
BACKOFF_TRANSIENT_S = 2.0  # aborted/interference/timeouts: try again soon
BACKOFF_BLUEZ_S = 5.0  # BlueZ or D-Bus trouble (bluetoothd restarting): give it time
BACKOFF_OUT_OF_SLOTS_S = 30.0  # the controller has no free link: wait for one to close
BACKOFF_PROFILE_S = 600.0  # connected, but the device lacks the profile's characteristics
BACKOFF_NOT_FOUND_S = 1.0  # then wait for a fresh advertisement (re-discovery)
BACKOFF_FACTOR = 2.0
BACKOFF_MAX_S = 300.0
BACKOFF_JITTER = 0.2
# Time allowed for reads + subscriptions after a connect.
SETUP_TIMEOUT_S = 30.0
# After a disconnect, pause before looking again so BlueZ can settle the link.
RECONNECT_DELAY_S = 0.5
# Keep scanning this long after the last link stopped looking (avoids start/stop churn).
SCAN_LINGER_S = 2.0
# If starting discovery fails (adapter powered off, bluetoothd restarting), retry after this.
SCAN_RETRY_S = 5.0
# Polite-disconnect budget on shutdown (profile stop commands + Disconnect).
CLOSE_TIMEOUT_S = 5.0
NOTIFICATION_QUEUE_SIZE = 4096
# Advertisers remembered by discovery (phones rotate random addresses: keep it bounded).
SEEN_DEVICES_MAX = 512
SEEN_DEVICES_MAX_AGE_S = 60.0


class ErrorClass(str, enum.Enum):
    """What went wrong, which decides how long to wait before the next try."""

    NOT_FOUND = "not_found"  # the device is not there (or no longer known to BlueZ)
    OUT_OF_SLOTS = "out_of_slots"
    TRANSIENT = "transient"  # radio trouble: aborted connects, timeouts, GATT errors
    BLUEZ = "bluez"  # D-Bus / bluetoothd errors, the bus going away
    PROFILE = "profile"  # the device does not offer what its configured profile needs


class ProfileMismatch(BleakError):
    """Connected, but a required characteristic is missing or cannot notify."""


def classify(exc: BaseException) -> ErrorClass:
    if isinstance(exc, ProfileMismatch):
        return ErrorClass.PROFILE
    if isinstance(exc, (BleakNotFoundError, BleakDeviceNotFoundError)):
        return ErrorClass.NOT_FOUND
    if isinstance(exc, BleakOutOfConnectionSlotsError):
        return ErrorClass.OUT_OF_SLOTS
    if isinstance(exc, (BleakAbortedError, TimeoutError)):
        return ErrorClass.TRANSIENT
    if isinstance(exc, BleakConnectionError):
        cause = exc.__cause__
        return (
            ErrorClass.BLUEZ
            if isinstance(cause, (EOFError, BrokenPipeError, ConnectionError))
            else ErrorClass.TRANSIENT
        )
    if isinstance(exc, BleakDBusError):
        return ErrorClass.BLUEZ
    if isinstance(exc, (EOFError, BrokenPipeError, ConnectionError)):
        return ErrorClass.BLUEZ
    return ErrorClass.TRANSIENT


@dataclass(frozen=True)
class RetryPolicy:
    """All timing knobs in one place (tests use :meth:`fast`)."""

    connect_attempts: int = CONNECT_ATTEMPTS
    base_s: dict[ErrorClass, float] = field(
        default_factory=lambda: {
            ErrorClass.TRANSIENT: BACKOFF_TRANSIENT_S,
            ErrorClass.BLUEZ: BACKOFF_BLUEZ_S,
            ErrorClass.OUT_OF_SLOTS: BACKOFF_OUT_OF_SLOTS_S,
            ErrorClass.PROFILE: BACKOFF_PROFILE_S,
            ErrorClass.NOT_FOUND: BACKOFF_NOT_FOUND_S,
        }
    )
    factor: float = BACKOFF_FACTOR
    max_s: float = BACKOFF_MAX_S
    jitter: float = BACKOFF_JITTER
    setup_timeout_s: float = SETUP_TIMEOUT_S
    reconnect_delay_s: float = RECONNECT_DELAY_S
    scan_linger_s: float = SCAN_LINGER_S
    scan_retry_s: float = SCAN_RETRY_S
    close_timeout_s: float = CLOSE_TIMEOUT_S

    def backoff(self, error: ErrorClass, consecutive_failures: int) -> float:
        delay = capped_exponential(consecutive_failures, self.base_s[error], self.max_s, self.factor)
        return delay * (1 + random.uniform(-self.jitter, self.jitter))

    @classmethod
    def fast(cls, scale: float = 0.02) -> RetryPolicy:
        """Every wait scaled down (simulators and tests)."""
        d = cls()
        return replace(
            d,
            base_s={k: v * scale for k, v in d.base_s.items()},
            max_s=d.max_s * scale,
            reconnect_delay_s=0.05,
            scan_linger_s=0.5,
            scan_retry_s=0.2,
        )


# ---------------------------------------------------------------- discovery


@dataclass(frozen=True)
class DeviceMatcher:
    """How a configured device is recognised in advertisements: by address, else by advertised name."""

    address: str | None = None
    name: str | None = None

    def matches(self, device: BLEDevice, adv: AdvertisementData | None) -> bool:
        if self.address:
            return device.address.upper() == self.address.upper()
        local = adv.local_name if adv is not None else None
        return bool(self.name) and self.name in (local, device.name)

    def __str__(self) -> str:
        return self.address or f"name={self.name!r}"


AdvertHook = Callable[[BLEDevice, AdvertisementData], None]


class Discovery:
    """One BleakScanner shared by all links, scanning only while someone is looking."""

    def __init__(
        self, adapter: str | None = None, policy: RetryPolicy | None = None, on_advert: AdvertHook | None = None
    ) -> None:
        self._adapter = adapter
        self._policy = policy or RetryPolicy()
        self._on_advert = on_advert
        self._waiters: dict[int, tuple[DeviceMatcher, float, asyncio.Future[BLEDevice]]] = {}
        self._latest: dict[str, tuple[BLEDevice, AdvertisementData, float]] = {}
        self._changed = asyncio.Event()
        self._ids = 0
        self.scans_started = 0
        self.scanning = False

    async def find(self, matcher: DeviceMatcher, *, since: float = 0.0) -> BLEDevice:
        """Wait (as long as it takes; cancel to stop) for an advertisement newer than ``since`` (monotonic)."""
        for device, adv, seen in self._latest.values():
            if seen >= since and matcher.matches(device, adv):
                return device
        fut: asyncio.Future[BLEDevice] = asyncio.get_running_loop().create_future()
        self._ids += 1
        key = self._ids
        self._waiters[key] = (matcher, since, fut)
        self._changed.set()
        try:
            return await fut
        finally:
            self._waiters.pop(key, None)
            self._changed.set()

    def _on_detect(self, device: BLEDevice, adv: AdvertisementData) -> None:
        now = time.monotonic()
        self._latest[device.address.upper()] = (device, adv, now)
        if len(self._latest) > SEEN_DEVICES_MAX:
            self._latest = {k: v for k, v in self._latest.items() if now - v[2] < SEEN_DEVICES_MAX_AGE_S}
        if self._on_advert is not None:
            self._on_advert(device, adv)
        for matcher, since, fut in list(self._waiters.values()):
            if not fut.done() and now >= since and matcher.matches(device, adv):
                fut.set_result(device)

    async def run(self) -> None:
        """The owner task: start the scanner when a link looks for its device, stop it when none does."""
        bluez: dict[str, Any] = {"adapter": self._adapter} if self._adapter else {}
        while True:
            while not self._waiters:
                self._changed.clear()
                await self._changed.wait()
            scanner = BleakScanner(detection_callback=self._on_detect, bluez=bluez)  # type: ignore[arg-type]
            try:
                await scanner.start()
            except Exception as exc:  # adapter off, bluetoothd restarting, bus not reachable
                log.warning(
                    "BLE discovery could not start (%s); retrying in %.1f s. Check that the Bluetooth "
                    "service runs (systemctl status bluetooth) and the adapter is on (bluetoothctl power on)",
                    exc,
                    self._policy.scan_retry_s,
                )
                await asyncio.sleep(self._policy.scan_retry_s)
                continue
            self.scans_started += 1
            self.scanning = True
            log.debug("BLE discovery started")
            try:
                while True:
                    self._changed.clear()
                    if self._waiters:
                        await self._changed.wait()
                        continue
                    try:
                        await asyncio.wait_for(self._changed.wait(), self._policy.scan_linger_s)
                    except TimeoutError:
                        break
            finally:
                self.scanning = False
                try:
                    await asyncio.shield(scanner.stop())
                except Exception as exc:
                    log.debug("BLE discovery stop failed: %s", exc)
                log.debug("BLE discovery stopped")


# ---------------------------------------------------------------- one device


@dataclass(frozen=True)
class Subscription:
    """A characteristic to subscribe to on every connect (notify or indicate, chosen by bleak)."""

    uuid: str
    required: bool = True


class DeviceOutlet:
    """Where a profile hands what it decoded: the gateway's ingress (set up by BleIngress)."""

    async def reading(
        self, reading: Any, received_at: datetime, on_stored: Callable[[], None] | None = None
    ) -> None:  # pragma: no cover - interface
        """Bind to the patient and submit; ``on_stored`` runs once the stream core has stored it."""
        raise NotImplementedError

    def reject(self, rejected: Rejected) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def activity(self) -> None:
        """The device did something (advertised, connected, sent a value)."""


class LinkProfile(Protocol):
    """What a `DeviceLink` asks of a device profile, in the order it asks (gateway/ble/profiles.py)."""

    @property
    def name(self) -> str: ...
    def subscriptions(self) -> list[Subscription]: ...
    async def read_on_connect(self, session: BleSession) -> None: ...
    async def on_connected(self, session: BleSession) -> None: ...  # after the subscriptions
    async def on_value(self, session: BleSession, uuid: str, data: bytes, received_at: datetime) -> None: ...
    async def before_disconnect(self, session: BleSession) -> None: ...  # closing on purpose
    async def on_link_lost(self, session: BleSession) -> None: ...  # every value received was handled


class BleSession:
    """One connection: the bleak client plus helpers for the profile."""

    def __init__(
        self, client: BleakClient, device_id: str, outlet: DeviceOutlet, clock: Callable[[], datetime]
    ) -> None:
        self.client = client
        self.device_id = device_id
        self.outlet = outlet
        self.clock = clock
        self.subscribed: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def char(self, uuid: str) -> BleakGATTCharacteristic | None:
        services = self.client.services
        return services.get_characteristic(uuid) if services is not None else None

    async def read(self, uuid: str) -> bytes:
        data = bytes(await self.client.read_gatt_char(uuid))
        self.outlet.activity()
        return data

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        await self.client.write_gatt_char(uuid, data, response=response)

    def spawn(self, coro: Awaitable[Any]) -> None:
        """A task that ends with the connection (e.g. a resync started by a notification)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: background step failed: %s", self.device_id, task.exception())

    async def cancel_tasks(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class LinkStatus:
    """What the gateway status and the tests can see about one link."""

    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # error class -> count
    consecutive_failures: int = 0
    last_error: str | None = None
    last_backoff_s: float | None = None
    backoffs: list[tuple[str, float]] = field(default_factory=list)  # (error class, seconds), last 20
    subscriptions: int = 0  # StartNotify calls made, all connects together


class DeviceLink:
    """Keeps one configured device connected, or looking for it, until closed."""

    def __init__(
        self,
        device_id: str,
        matcher: DeviceMatcher,
        profile: LinkProfile,
        outlet: DeviceOutlet,
        discovery: Discovery,
        slots: asyncio.Semaphore,
        *,
        policy: RetryPolicy | None = None,
        adapter: str | None = None,
        clock: Callable[[], datetime],
    ) -> None:
        self.device_id = device_id
        self.matcher = matcher
        self.profile = profile
        self.outlet = outlet
        self.discovery = discovery
        self.slots = slots
        self.policy = policy or RetryPolicy()
        self.adapter = adapter
        self.clock = clock
        self.status = LinkStatus()
        self._closing = asyncio.Event()

    def request_close(self) -> None:
        self._closing.set()

    async def run(self) -> None:
        since = 0.0  # any advertisement will do for the first connect
        while not self._closing.is_set():
            device = await self._until_closed(self.discovery.find(self.matcher, since=since))
            if device is None:
                return
            self.outlet.activity()
            failure: BaseException | None = None
            async with self.slots:
                if self._closing.is_set():
                    return
                try:
                    await self._connect_and_serve(device)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failure = exc
            since = time.monotonic()  # reconnect only after a fresh advertisement
            if failure is None:
                await self._sleep(self.policy.reconnect_delay_s)
                continue
            cls = classify(failure)
            st = self.status
            st.consecutive_failures += 1
            st.failures[cls.value] = st.failures.get(cls.value, 0) + 1
            st.last_error = f"{type(failure).__name__}: {failure}"
            delay = self.policy.backoff(cls, st.consecutive_failures)
            st.last_backoff_s = delay
            st.backoffs = [*st.backoffs[-19:], (cls.value, delay)]
            level = logging.ERROR if cls is ErrorClass.PROFILE else logging.WARNING
            log.log(
                level,
                "%s (%s): %s failure, retrying in %.1f s: %s",
                self.device_id,
                self.matcher,
                cls.value,
                delay,
                failure,
            )
            await self._sleep(delay)

    async def _until_closed(self, aw: Awaitable[BLEDevice]) -> BLEDevice | None:
        task = asyncio.ensure_future(aw)
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({task, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            pass

    async def _connect_and_serve(self, device: BLEDevice) -> None:
        lost = asyncio.Event()
        backend: dict[str, Any] = {"bluez": {"adapter": self.adapter}} if self.adapter else {}
        client = await establish_connection(
            BleakClientWithServiceCache,
            device,
            self.device_id,
            disconnected_callback=lambda _c: lost.set(),
            max_attempts=self.policy.connect_attempts,
            **backend,
        )
        st = self.status
        st.connected = True
        st.connects += 1
        self.outlet.activity()
        log.info("%s: connected to %s (connect #%d)", self.device_id, device.address, st.connects)
        session = BleSession(client, self.device_id, self.outlet, self.clock)
        queue: asyncio.Queue[tuple[str, bytes, datetime]] = asyncio.Queue(NOTIFICATION_QUEUE_SIZE)
        consumer = asyncio.create_task(self._consume(session, queue), name=f"ble-{self.device_id}")
        subscribed = False
        try:
            async with asyncio.timeout(self.policy.setup_timeout_s):
                await self.profile.read_on_connect(session)
                await self._subscribe_all(session, queue)
            subscribed = True
            # The profile's procedures (a long back-fill) end early if the link drops or we close.
            procedures = asyncio.ensure_future(self.profile.on_connected(session))
            closing = asyncio.ensure_future(self._closing.wait())
            gone = asyncio.ensure_future(lost.wait())
            try:
                done, _ = await asyncio.wait({procedures, closing, gone}, return_when=asyncio.FIRST_COMPLETED)
                if procedures in done:
                    procedures.result()  # a profile failure (e.g. the stream would not start) ends the link
                    st.consecutive_failures = 0
                    await asyncio.wait({closing, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (procedures, closing, gone):
                    t.cancel()
                await asyncio.gather(procedures, return_exceptions=True)
        finally:
            await self._end_session(client, session, queue, consumer, lost, polite=subscribed)

    async def _subscribe_all(self, session: BleSession, queue: asyncio.Queue[tuple[str, bytes, datetime]]) -> None:
        """Subscribe to every characteristic the profile lists; done after every connect."""

        def on_value(ch: BleakGATTCharacteristic, data: bytearray) -> None:
            item = (ch.uuid, bytes(data), self.clock())
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self.outlet.reject(
                    Rejected(
                        reason="ble_queue_full",
                        device_id=self.device_id,
                        detail=f"{ch.uuid}: notification dropped, {NOTIFICATION_QUEUE_SIZE} waiting",
                    )
                )

        for sub in self.profile.subscriptions():
            ch = session.char(sub.uuid)
            if ch is None or not ({"notify", "indicate"} & set(ch.properties)):
                if sub.required:
                    what = "is missing" if ch is None else "cannot notify"
                    raise ProfileMismatch(
                        f"characteristic {sub.uuid} {what}; is the configured profile "
                        f"{self.profile.name!r} right for this device?"
                    )
                continue
            await session.client.start_notify(ch, on_value, bluez={"use_start_notify": True})
            session.subscribed.append(sub.uuid)
            self.status.subscriptions += 1
        log.debug("%s: subscribed to %d characteristic(s)", self.device_id, len(session.subscribed))

    async def _consume(self, session: BleSession, queue: asyncio.Queue[tuple[str, bytes, datetime]]) -> None:
        while True:
            uuid, data, received_at = await queue.get()
            try:
                self.outlet.activity()
                await self.profile.on_value(session, uuid, data, received_at)
            except Exception:  # one bad value must never stop the device's stream
                log.exception("%s: failed to handle a %s value", self.device_id, uuid)
            finally:
                queue.task_done()

    async def _end_session(
        self,
        client: BleakClient,
        session: BleSession,
        queue: asyncio.Queue[tuple[str, bytes, datetime]],
        consumer: asyncio.Task[None],
        lost: asyncio.Event,
        polite: bool,
    ) -> None:
        st = self.status
        await session.cancel_tasks()
        try:
            async with asyncio.timeout(self.policy.close_timeout_s):
                if polite and client.is_connected and not lost.is_set():
                    await self.profile.before_disconnect(session)
                # Also after the device dropped the link: bleak's client holds its own D-Bus
                # connection until disconnect() releases it (a socket per reconnect otherwise).
                await client.disconnect()
        except Exception as exc:
            log.debug("%s: disconnect: %s", self.device_id, exc)
        # Values already received are handled, never dropped.
        try:
            async with asyncio.timeout(self.policy.close_timeout_s):
                await queue.join()
        except TimeoutError:
            log.warning("%s: %d received value(s) not handled at disconnect", self.device_id, queue.qsize())
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        try:
            await self.profile.on_link_lost(session)
        except Exception:
            log.exception("%s: profile cleanup failed", self.device_id)
        if st.connected:
            st.connected = False
            st.disconnects += 1
            log.info("%s: disconnected", self.device_id)
