"""One persistent MQTT session (aiomqtt), reconnecting with backoff.

The session is persistent (clean_session=False, fixed client id), so while the
gateway is disconnected the broker keeps the QoS 1 readings addressed to it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt

log = logging.getLogger("vitalgate.mqtt")

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0

MessageHandler = Callable[[str, bytes], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]


class NotConnected(ConnectionError):
    pass


class MqttLink:
    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        subscriptions: list[str],
        on_message: MessageHandler,
        on_connect: ConnectHandler | None = None,
        will: aiomqtt.Will | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        keepalive: int = 30,
    ) -> None:
        self.host, self.port = host, port
        self._client_id = client_id
        self._subs = subscriptions
        self._on_message = on_message
        self._on_connect = on_connect
        self._will = will
        self._auth = (username, password)
        self._tls = ssl.create_default_context(cafile=ca_file) if tls else None
        self._keepalive = keepalive
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.connects = 0

    async def publish(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> None:
        client = self._client
        if client is None or not self.connected.is_set():
            raise NotConnected(f"not connected to the broker at {self.host}:{self.port}")
        await client.publish(topic, payload, qos=qos, retain=retain)

    async def run(self, stop: asyncio.Event) -> None:
        delay = RECONNECT_MIN_S
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=self._client_id, clean_session=False,
                    will=self._will, username=self._auth[0], password=self._auth[1],
                    tls_context=self._tls, keepalive=self._keepalive, max_queued_incoming_messages=10000,
                ) as client:
                    self._client = client
                    for topic in self._subs:
                        await client.subscribe(topic, qos=1)
                    self.connected.set()
                    self.connects += 1
                    delay = RECONNECT_MIN_S
                    log.info("connected to broker", extra={"broker": f"{self.host}:{self.port}"})
                    if self._on_connect is not None:
                        await self._on_connect()
                    consume = asyncio.create_task(self._consume(client))
                    stopper = asyncio.create_task(stop.wait())
                    done, _ = await asyncio.wait({consume, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    stopper.cancel()
                    if consume in done:
                        consume.result()  # re-raise the connection error
                    else:
                        consume.cancel()
                        await asyncio.gather(consume, return_exceptions=True)
                        self.connected.clear()
                        self._client = None
                        return
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self._client = None
                log.warning("broker connection lost; retrying in %.1f s: %s", delay, exc,
                            extra={"broker": f"{self.host}:{self.port}"})
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, RECONNECT_MAX_S)

    async def quiesce(self, timeout_s: float = 5.0) -> None:
        """Let what the broker already handed us be processed before we disconnect.

        Subscriptions stay: the persistent session keeps queueing readings at
        the broker while the gateway is down. Messages the client library has
        already acknowledged are in its local queue; wait (bounded) until our
        consumer has taken them all.
        """
        client = self._client
        if client is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(client.messages) > 0 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # the message being handled right now

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, (bytes, bytearray)) else str(message.payload or "").encode()
            await self._on_message(str(message.topic), bytes(payload))
