"""One MQTT session (paho-mqtt driven by the asyncio loop), reconnecting with backoff.

Why paho under our own small adapter rather than aiomqtt: ingestion is
at-least-once, so a reading is acknowledged (PUBACK) to the broker only once
it is durably stored, and aiomqtt 2.5 acknowledges every message before the
application sees it (it exposes no manual acks). paho-mqtt 2.x does
(`manual_ack=True` + `Client.ack(mid, qos)`), and its read path costs about
half of aiomqtt's CPU per message (docs/spec/machine-limits.md).

The session is persistent (fixed client id, MQTT 3.1.1 `clean_session=False`;
MQTT 5 `clean_start=False` with a session that never expires), so while the
gateway is down the broker keeps the QoS 1 readings addressed to it, and a
message received but not yet acknowledged is redelivered on the next
connection.

Protocol: the clinic link speaks MQTT 3.1.1 by default. MQTT 5 would let us
ask for a bigger window of unacknowledged messages (Receive Maximum; Mosquitto
gives a 3.1.1 client `max_inflight_messages`, default 20), but paho builds a
Properties object for every incoming PUBLISH and PUBACK under MQTT 5, which
cost more throughput (bench/throughput.py: 41 % of raw against 47 %) than the
20-message window does: acknowledgements follow each tick's commit, so the
window keeps moving. The gateway's critical session asks for MQTT 5 and a wide
window (shards/lanes.py: readings held on a full disk must not stop it); the
county uplink uses "auto" (MQTT 5 for its `msg_id` user property, 3.1.1 for
brokers without it).

Bounded everywhere: the broker sends at most `receive_maximum` unacknowledged
QoS 1 messages; if messages still pile up ahead of the handler (QoS 0
floods), the socket is no longer read until the backlog is down again; our
own QoS 1 publishes are capped by `PUBLISH_WINDOW` awaiting PUBACK.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.matcher import MQTTMatcher
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from stream.retry_backoff import jittered

log = logging.getLogger("vitalgate.mqtt")

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
CONNECT_TIMEOUT_S = 10.0
# A broker that does not speak MQTT 5 (amqtt) may never answer a v5 CONNECT; on loopback a
# CONNACK takes milliseconds, so we give up on v5 quickly there.
V5_PROBE_TIMEOUT_LOOPBACK_S = 1.0
SUBSCRIBE_TIMEOUT_S = 10.0
SESSION_EXPIRY_S = 0xFFFFFFFF  # MQTT 5: "never expires", as a 3.1.1 persistent session
RECEIVE_MAXIMUM = 1000  # unacknowledged QoS 1 messages the broker may send us at once
PUBLISH_WINDOW = 1000  # our QoS 1 publishes on the wire awaiting PUBACK (paho queues the rest)
READ_PAUSE_AT = 5000  # stop reading the socket when this many messages wait for the handler
READ_RESUME_AT = 1000
MISC_TICK_S = 1.0  # paho's keepalive / retry bookkeeping
READ_BATCH = 1000  # packets read per readable event at most, so a flood cannot hold the loop

Ack = Callable[[], None]
MessageHandler = Callable[[str, bytes], Awaitable[None]]
AckingMessageHandler = Callable[[str, bytes, Ack], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]


class NotConnected(ConnectionError):
    pass


class _ProtocolRefused(ConnectionError):
    """The broker does not speak MQTT 5; retry at once with 3.1.1."""


def _noop() -> None:
    pass


_NO_PROPERTIES = Properties(PacketTypes.PUBLISH)  # shared and never modified


class _PahoLogger:
    """What paho logs, through our logger; its per-packet DEBUG lines dropped at once unless shown.

    paho calls `logger.log(DEBUG, ...)` two or three times per packet; the
    standard Logger gets to "not enabled" through two calls and a cache.
    """

    __slots__ = ("_logger", "_debug")

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._debug = logger.isEnabledFor(logging.DEBUG)  # (per session: each connection makes a new one)

    def log(self, level: int, msg: str, *args: Any) -> None:
        if level > logging.DEBUG or self._debug:
            self._logger.log(level, msg, *args)


class _NoFilteredCallbacks:
    """Stands in for paho's per-topic callback matcher: we register none (message_callback_add).

    paho asks its matcher for every incoming message, and MQTTMatcher.iter_match
    builds a recursive closure per call: a reference cycle per message, six
    objects for the garbage collector (bench/throughput.py: about a fifth of the
    gateway's collector time). With no filters it always finds nothing; so does this.
    """

    __slots__ = ()

    def iter_match(self, topic: str) -> tuple[()]:
        return ()


class PublishWindow:
    """Slots for our QoS 1 publishes awaiting PUBACK; waiters are served first come, first served.

    asyncio.Semaphore would do, but once many wait (every patient worker,
    when the broker is slow to acknowledge) it scans all its waiters on every
    acquire and release: O(waiters) per message (bench/throughput.py). Here a
    release hands its slot straight to the oldest live waiter, O(1).
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        return self._free

    def try_acquire(self) -> bool:
        """Take a slot if one is free now (no coroutine, no waiting)."""
        if self._free > 0:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self._free > 0:  # (free slots only exist while nobody waits: release hands them over)
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was ours already: pass it on
            raise  # (a cancelled waiter stays queued; release skips it)

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes to this waiter
                return
        self._free += 1


ErrorCallback = Callable[[BaseException], None]


async def await_publish(fut: asyncio.Future[None]) -> None:
    """Wait for a PUBACK future from `start_publish` (it always completes: result or NotConnected)."""
    await fut


class MqttLink:
    """A persistent session with a broker: subscribe, hand messages over in order, publish.

    `on_message(topic, payload)` by default; the message is acknowledged when
    the handler returns. With `manual_ack=True` it is called as
    `on_message(topic, payload, ack)` and the broker is acknowledged only when
    `ack()` is called (after the message's effect is durable). An `ack` from a
    connection that has since dropped does nothing: the broker redelivers that
    message, and idempotency keys make the redelivery harmless.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        subscriptions: list[str],
        on_message: MessageHandler | AckingMessageHandler,
        on_connect: ConnectHandler | None = None,
        will: Any = None,  # anything with topic, payload, qos, retain (aiomqtt.Will works)
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        keepalive: int = 30,
        *,
        cert_file: str | None = None,  # a client certificate (PEM) and its key: mutual TLS
        key_file: str | None = None,
        manual_ack: bool = False,
        persistent: bool = True,
        protocol: str = "3.1.1",  # "3.1.1", "5" or "auto" (5, else 3.1.1)
        receive_maximum: int = RECEIVE_MAXIMUM,
        unsubscriptions: list[str] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._client_id = client_id
        self._subs = subscriptions
        # Filters to drop from the persistent session on every connect (an earlier layout's subscriptions).
        self._unsubs = list(unsubscriptions or [])
        self._on_message = on_message
        self._on_connect = on_connect
        self._will = will
        self._auth = (username, password)
        self._tls = ssl.create_default_context(cafile=ca_file) if tls else None
        if self._tls is not None and cert_file:
            self._tls.load_cert_chain(cert_file, key_file)
        self._keepalive = keepalive
        self._manual_ack = manual_ack
        self._persistent = persistent
        if protocol not in ("auto", "5", "3.1.1"):
            raise ValueError(f"protocol must be auto, 5 or 3.1.1, not {protocol!r}")
        self._v5 = protocol != "3.1.1"
        self._may_fall_back = protocol == "auto"
        self._v5_confirmed = False
        self._receive_maximum = receive_maximum
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: deque[tuple[mqtt.Client, mqtt.MQTTMessage]] = deque()
        self._inbox_wake = asyncio.Event()
        self._handling = False
        self._read_paused = False
        self._sock: Any = None
        # mid -> the PUBACK future (start_publish), or the slot and error callback (publish_nowait)
        self._pending: dict[int, asyncio.Future[None] | tuple[PublishWindow, ErrorCallback | None]] = {}
        self._window = PublishWindow(PUBLISH_WINDOW)  # replaced per connection (broker's Receive Maximum)
        self._connack: asyncio.Future[bool] | None = None
        self._suback: asyncio.Future[list[ReasonCode]] | None = None
        self._lost: asyncio.Future[None] | None = None
        self.connected = asyncio.Event()
        self.connects = 0
        self.protocol_in_use: str | None = None
        self.received = 0
        self.acked = 0
        self._packets = 0  # PUBLISHes and PUBACKs read (see _readable)

    @property
    def uses_v5(self) -> bool:
        return self.protocol_in_use == "5"

    # ------------------------------------------------------------ publish

    async def publish(
        self,
        topic: str,
        payload: str | bytes,
        qos: int = 1,
        retain: bool = False,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> None:
        """Publish and, at QoS > 0, wait for the broker's PUBACK.

        Raises NotConnected when there is no connection or it drops before the
        PUBACK arrives (the message may or may not have reached the broker).
        """
        await await_publish(await self.start_publish(topic, payload, qos, retain, user_properties))

    async def start_publish(
        self,
        topic: str,
        payload: str | bytes,
        qos: int = 1,
        retain: bool = False,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> asyncio.Future[None]:
        """Hand one message to the connection and return a future that completes at its PUBACK.

        Waits only for a slot in the in-flight window, so one caller issuing
        several start_publish calls in a row keeps their order on the wire.
        `user_properties` are sent as MQTT 5 user properties (a 3.1.1
        connection drops them). Raises NotConnected when not connected.
        """
        window = await self._take_slot()
        # From here on the slot is released exactly once: when the future completes.
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda _f: window.release())
        client = self._client
        if client is None or not self.connected.is_set():
            fut.set_exception(NotConnected(f"not connected to the broker at {self.host}:{self.port}"))
            return fut
        try:
            return self._hand_to_paho(client, fut, topic, payload, qos, retain, user_properties)
        except Exception as exc:  # never leak a window slot
            if not fut.done():
                fut.set_exception(NotConnected(f"publish to {self.host}:{self.port} failed: {exc}"))
            return fut

    async def publish_nowait(
        self,
        topic: str,
        payload: str | bytes,
        qos: int = 1,
        retain: bool = False,
        on_error: ErrorCallback | None = None,
    ) -> None:
        """Hand one message to the connection without waiting for its PUBACK.

        Like `start_publish` (waits only for a slot in the in-flight window,
        order on the wire kept), but with no future per message: the slot is
        freed at the PUBACK, and `on_error(exc)` is called (from the event
        loop) if the broker refuses it or the connection drops before the
        PUBACK. Raises NotConnected when not connected.
        """
        window = self._window
        if self._client is None or not self.connected.is_set() or not window.try_acquire():
            window = await self._take_slot()  # (a free slot, the usual case, is taken without a coroutine)
        client = self._client
        if client is None or not self.connected.is_set():
            window.release()
            raise NotConnected(f"not connected to the broker at {self.host}:{self.port}")
        try:
            info = self._paho_publish(client, topic, payload, qos, retain, None)
        except Exception as exc:
            window.release()
            raise NotConnected(f"publish to {self.host}:{self.port} failed: {exc}") from exc
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            window.release()
            raise NotConnected(f"publish to {self.host}:{self.port} failed: {mqtt.error_string(info.rc)}")
        if qos == 0 or info.is_published():
            window.release()
        else:
            self._pending[info.mid] = (window, on_error)

    async def _take_slot(self) -> PublishWindow:
        if self._client is None or not self.connected.is_set():
            raise NotConnected(f"not connected to the broker at {self.host}:{self.port}")
        while True:
            window = self._window
            await window.acquire()
            if window is self._window:
                return window
            window.release()  # the connection changed while we waited: queue on the new one

    def _paho_publish(
        self,
        client: mqtt.Client,
        topic: str,
        payload: str | bytes,
        qos: int,
        retain: bool,
        user_properties: list[tuple[str, str]] | None,
    ) -> mqtt.MQTTMessageInfo:
        props = _NO_PROPERTIES if self.uses_v5 else None  # paho would build an empty one per message
        if user_properties and self.uses_v5:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = list(user_properties)
        return client.publish(topic, payload, qos=qos, retain=retain, properties=props)

    def _hand_to_paho(
        self,
        client: mqtt.Client,
        fut: asyncio.Future[None],
        topic: str,
        payload: str | bytes,
        qos: int,
        retain: bool,
        user_properties: list[tuple[str, str]] | None,
    ) -> asyncio.Future[None]:
        info = self._paho_publish(client, topic, payload, qos, retain, user_properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            fut.set_exception(NotConnected(f"publish to {self.host}:{self.port} failed: {mqtt.error_string(info.rc)}"))
        elif qos == 0 or info.is_published():
            fut.set_result(None)
        else:
            self._pending[info.mid] = fut
        return fut

    # ------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, subscribe, deliver messages; reconnect with backoff until `stop` is set."""
        self._loop = asyncio.get_running_loop()
        delay = RECONNECT_MIN_S
        consumer = asyncio.create_task(self._consume(), name="mqtt-consume")
        try:
            while not stop.is_set():
                try:
                    await self._session(stop)
                    delay = RECONNECT_MIN_S
                except _ProtocolRefused:
                    log.info(
                        "broker does not accept MQTT 5; using MQTT 3.1.1", extra={"broker": f"{self.host}:{self.port}"}
                    )
                    self._v5 = False
                    continue
                except (ConnectionError, OSError, TimeoutError) as exc:
                    if self.connects:  # only noisy after we have been connected once
                        log.warning(
                            "broker connection lost; retrying in %.1f s: %s",
                            delay,
                            exc,
                            extra={"broker": f"{self.host}:{self.port}"},
                        )
                    else:
                        log.info(
                            "broker not reachable; retrying in %.1f s: %s",
                            delay,
                            exc,
                            extra={"broker": f"{self.host}:{self.port}"},
                        )
                    try:
                        # jittered: after a broker restart the clinics do not all come back at once
                        await asyncio.wait_for(stop.wait(), timeout=jittered(delay))
                    except TimeoutError:
                        pass
                    delay = min(delay * 2, RECONNECT_MAX_S)
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)

    async def quiesce(self, timeout_s: float = 5.0) -> None:
        """Let what the broker already handed us be processed before we disconnect.

        Subscriptions stay: the persistent session keeps queueing readings at
        the broker while the gateway is down, and whatever we received but did
        not acknowledge is redelivered next time. Waits (bounded) until the
        handler has taken every message received so far.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (self._inbox or self._handling) and loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def _session(self, stop: asyncio.Event) -> None:
        loop = self._loop
        assert loop is not None
        v5 = self._v5
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not self._persistent,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        # Our own window (self._window, taken before every publish) bounds what is in flight; paho's
        # limit stays off (0), because with one set paho walks every unacknowledged message on each
        # PUBACK (Client._update_inflight), O(in flight) per message (bench/throughput.py).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        if isinstance(getattr(client, "_on_message_filtered", None), MQTTMatcher):  # (paho 2.x internals)
            client._on_message_filtered = _NoFilteredCallbacks()  # type: ignore[assignment]
        client.enable_logger(_PahoLogger(logging.getLogger("vitalgate.mqtt.paho")))  # type: ignore[arg-type]
        if self._auth[0] is not None:
            client.username_pw_set(self._auth[0], self._auth[1])
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if self._will is not None:
            w = self._will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        self._connack = loop.create_future()
        self._lost = loop.create_future()
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_message = self._cb_message
        client.on_subscribe = self._cb_subscribe
        client.on_publish = self._cb_publish
        client.on_socket_open = self._cb_socket_open
        client.on_socket_close = self._cb_socket_close
        client.on_socket_register_write = self._cb_register_write
        client.on_socket_unregister_write = self._cb_unregister_write
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S if self._persistent else 0
            props.ReceiveMaximum = self._receive_maximum
        self._client = client
        misc: asyncio.Task | None = None
        try:
            connect = functools.partial(
                client.connect,
                self.host,
                self.port,
                self._keepalive,
                clean_start=(not self._persistent) if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=props,
            )
            # paho's connect resolves and connects a blocking socket: off the loop (county uplinks are slow).
            await asyncio.wait_for(loop.run_in_executor(None, connect), CONNECT_TIMEOUT_S)
            misc = asyncio.create_task(self._misc_loop(client), name="mqtt-misc")
            probing = self._may_fall_back and v5 and not self._v5_confirmed
            timeout = (
                V5_PROBE_TIMEOUT_LOOPBACK_S
                if probing and self.host in ("127.0.0.1", "localhost", "::1")
                else CONNECT_TIMEOUT_S
            )
            waiting: set[asyncio.Future[Any]] = {self._connack, self._lost}
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if self._connack not in done:
                if probing:
                    raise _ProtocolRefused()  # connected, but no answer to MQTT 5: try 3.1.1
                if self._may_fall_back and not v5:
                    self._v5 = True  # no answer to 3.1.1 either: the next attempt tries 5 again
                raise ConnectionError("no CONNACK from the broker")
            self._connack.result()  # raises on a refused connection
            # Usable from the CONNACK on: a persistent session's queued messages arrive right after
            # it, before our SUBACK, and what the handler publishes for them (the live republish)
            # must not be refused as "not connected".
            self.connected.set()
            if self._subs:
                self._suback = loop.create_future()
                rc, _ = client.subscribe([(t, 1) for t in self._subs])
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    raise ConnectionError(f"subscribe failed: {mqtt.error_string(rc)}")
                codes = await asyncio.wait_for(asyncio.shield(self._suback), SUBSCRIBE_TIMEOUT_S)
                bad = [str(c) for c in codes if c.is_failure]
                if bad:
                    raise ConnectionError(f"broker refused subscriptions: {', '.join(bad)}")
            if self._unsubs:
                client.unsubscribe(self._unsubs)  # no need to wait: what was queued for them still comes
            self.protocol_in_use = "5" if v5 else "3.1.1"
            self._v5_confirmed = self._v5_confirmed or v5
            self.connects += 1
            log.info("connected to broker", extra={"broker": f"{self.host}:{self.port}", "mqtt": self.protocol_in_use})
            if self._on_connect is not None:
                await self._on_connect()
            stopper = asyncio.ensure_future(stop.wait())
            try:
                lost_fut: asyncio.Future[Any] = self._lost
                await asyncio.wait({stopper, lost_fut}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if self._lost.done():
                raise ConnectionError(str(self._lost.exception() or "connection closed by the broker"))
            # Clean stop: DISCONNECT, so the broker does not publish our will.
            client.disconnect()
            try:
                await asyncio.wait_for(asyncio.shield(self._lost), 2.0)
            except (TimeoutError, ConnectionError):
                pass
        finally:
            self.connected.clear()
            self._client = None
            if misc is not None:
                misc.cancel()
            self._drop_socket(client)
            pending, self._pending = self._pending, {}
            for entry in pending.values():
                lost = NotConnected(f"connection to {self.host}:{self.port} lost before PUBACK")
                if isinstance(entry, tuple):
                    entry[0].release()
                    self._publish_failed(entry[1], lost)
                elif not entry.done():
                    entry.set_exception(lost)
            if self._connack is not None and not self._connack.done():
                self._connack.cancel()
            if self._suback is not None and not self._suback.done():
                self._suback.cancel()

    # ------------------------------------------------------------ inbound

    async def _consume(self) -> None:
        """Hand messages to the handler one at a time, in arrival order."""
        inbox = self._inbox
        while True:
            if not inbox:
                self._inbox_wake.clear()
                await self._inbox_wake.wait()
                continue
            client, msg = inbox.popleft()
            if self._read_paused and len(inbox) <= READ_RESUME_AT:
                self._resume_reading(client)
            ack = self._acker(client, msg)
            self._handling = True
            try:
                payload = cast(bytes, msg.payload)  # paho hands bytes (its stub says bytes | bytearray)
                if self._manual_ack:
                    await cast(AckingMessageHandler, self._on_message)(msg.topic, payload, ack)
                else:
                    await cast(MessageHandler, self._on_message)(msg.topic, payload)
                    ack()
            except Exception:  # the handler owns its errors; never let one stop the session
                log.exception("message handler failed", extra={"topic": msg.topic})
            finally:
                self._handling = False

    def _acker(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> Ack:
        if msg.qos == 0:
            return _noop
        mid, qos = msg.mid, msg.qos
        done = False

        def ack() -> None:
            nonlocal done
            if done:
                return
            done = True
            # Only on the connection it came in on: mids are per connection. Not gated on
            # `connected`: the broker resends a session's unacknowledged messages right after
            # CONNACK, before our SUBACK, and an ack dropped then would hold a window slot forever.
            if client is self._client:
                client.ack(mid, qos)
                self.acked += 1

        return ack

    # ------------------------------------------------------------ paho callbacks (loop thread, except socket open)

    def _cb_connect(self, client, userdata, flags, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        fut = self._connack
        if fut is None or fut.done() or client is not self._client:
            return
        if reason_code.is_failure:
            if reason_code.value in (0x01, 0x84) and self._may_fall_back and self._v5:
                fut.set_exception(_ProtocolRefused())
            else:
                fut.set_exception(ConnectionRefusedError(f"broker refused the connection: {reason_code}"))
            return
        recv_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        # paho does not honour the broker's Receive Maximum (Mosquitto: its max_inflight_messages, 20)
        # and going over it is a protocol error, so our own window does.
        self._window = PublishWindow(min(PUBLISH_WINDOW, int(recv_max)) if recv_max else PUBLISH_WINDOW)
        fut.set_result(bool(getattr(flags, "session_present", False)))

    def _cb_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        if client is not self._client:
            return
        lost = self._lost
        if lost is not None and not lost.done():
            lost.set_exception(ConnectionError(f"disconnected: {reason_code}"))
            lost.exception()  # mark retrieved; the session loop reads it

    def _cb_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        self.received += 1
        self._packets += 1
        self._inbox.append((client, msg))
        self._inbox_wake.set()
        if not self._read_paused and len(self._inbox) >= READ_PAUSE_AT:
            self._pause_reading()

    def _cb_subscribe(self, client, userdata, mid, reason_codes, properties=None) -> None:  # type: ignore[no-untyped-def]
        if self._suback is not None and not self._suback.done():
            self._suback.set_result(list(reason_codes))

    def _cb_publish(self, client, userdata, mid, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        self._packets += 1
        if client is not self._client:
            return
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        failed = reason_code is not None and reason_code.is_failure
        if isinstance(entry, tuple):  # publish_nowait: free the slot here, no future
            entry[0].release()
            if failed:
                self._publish_failed(entry[1], NotConnected(f"broker refused the publish: {reason_code}"))
            return
        if entry.done():
            return
        if failed:
            entry.set_exception(NotConnected(f"broker refused the publish: {reason_code}"))
        else:
            entry.set_result(None)

    @staticmethod
    def _publish_failed(on_error: ErrorCallback | None, exc: BaseException) -> None:
        if on_error is None:
            return
        try:
            on_error(exc)
        except Exception:  # a caller's callback must not break the connection's bookkeeping
            log.exception("publish error callback failed")

    def _cb_socket_open(self, client, userdata, sock) -> None:  # type: ignore[no-untyped-def]
        # Called from the executor thread that runs paho's connect().
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._watch_socket, client, sock)

    def _watch_socket(self, client: mqtt.Client, sock: Any) -> None:
        if client is not self._client or sock.fileno() < 0:
            return
        try:
            # PUBACKs are 4-byte packets: with Nagle they wait for the broker's delayed TCP ack (~40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        self._sock = sock
        self._read_paused = False
        self._loop.add_reader(sock.fileno(), self._readable, client)  # type: ignore[union-attr]

    def _cb_socket_close(self, client, userdata, sock) -> None:  # type: ignore[no-untyped-def]
        if client is self._client or self._sock is sock:
            self._drop_socket(client)

    def _cb_register_write(self, client, userdata, sock) -> None:  # type: ignore[no-untyped-def]
        loop = self._loop
        assert loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.add_writer(sock.fileno(), self._writable, client)
        else:
            loop.call_soon_threadsafe(self._add_writer, client, sock)

    def _add_writer(self, client: mqtt.Client, sock: Any) -> None:
        if client is self._client and sock.fileno() >= 0:
            self._loop.add_writer(sock.fileno(), self._writable, client)  # type: ignore[union-attr]

    def _cb_unregister_write(self, client, userdata, sock) -> None:  # type: ignore[no-untyped-def]
        fd = sock.fileno()
        if fd >= 0 and self._loop is not None:
            self._loop.remove_writer(fd)

    # ------------------------------------------------------------ socket plumbing

    def _readable(self, client: mqtt.Client) -> None:
        """Read what the socket holds, up to READ_BATCH packets.

        paho's loop_read reads one packet unless our own publishes await
        PUBACKs (then as many as those); one event-loop turn per packet costs
        more than the packet (bench/throughput.py). So read on while packets
        come (a PUBLISH or PUBACK seen: `_packets` moved), and stop at the
        first call that read none of those (the socket is drained, or it was
        another packet type: level-triggered, the loop calls again).
        """
        try:
            for _ in range(READ_BATCH):
                seen = self._packets
                rc = client.loop_read()
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    self._connection_lost(client, f"read: {mqtt.error_string(rc)}")
                    return
                if self._read_paused:
                    return
                sock = client.socket()
                # TLS sockets may hold decoded bytes that select() never reports.
                if sock is not None and hasattr(sock, "pending") and sock.pending() > 0:
                    continue
                if self._packets == seen:
                    return
        except Exception as exc:  # a broken pipe or TLS error: the connection is gone
            self._connection_lost(client, f"read: {exc}")

    def _writable(self, client: mqtt.Client) -> None:
        try:
            rc = client.loop_write()
        except Exception as exc:
            self._connection_lost(client, f"write: {exc}")
            return
        if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
            self._connection_lost(client, f"write: {mqtt.error_string(rc)}")

    def _pause_reading(self) -> None:
        if self._sock is not None and self._sock.fileno() >= 0 and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._read_paused = True

    def _resume_reading(self, client: mqtt.Client) -> None:
        self._read_paused = False
        if client is self._client and self._sock is not None and self._sock.fileno() >= 0 and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._readable, client)

    def _connection_lost(self, client: mqtt.Client, why: str) -> None:
        self._drop_socket(client)
        if client is self._client and self._lost is not None and not self._lost.done():
            self._lost.set_exception(ConnectionError(why))
            self._lost.exception()

    def _drop_socket(self, client: mqtt.Client) -> None:
        sock = self._sock
        if sock is None or self._loop is None:
            return
        fd = sock.fileno()
        if fd >= 0:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        self._sock = None
        try:
            sock.close()
        except OSError:
            pass

    async def _misc_loop(self, client: mqtt.Client) -> None:
        """paho's keepalive pings and timeouts; a missed PINGRESP ends the connection."""
        while True:
            await asyncio.sleep(MISC_TICK_S)
            rc = client.loop_misc()
            if rc != mqtt.MQTT_ERR_SUCCESS and client is self._client:
                self._connection_lost(client, f"keepalive: {mqtt.error_string(rc)}")
                return
