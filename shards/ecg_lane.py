"""The ECG lane's ingest: the ECG session's messages, one at a time, in arrival order.

Each message is decoded, checked and stored by the lane's own stream core
(`StreamCore.process`: a frame is only stored there, `DeferredEcg`), and
acknowledged to the broker once its commit is done; the analysis reads the
frame from the log afterwards (`ecg_analysis.py`). One consumer keeps every
device's frames in arrival order without a queue and a task per patient.

It takes turns: after `INGEST_SLICE_S` of work it gives the event loop back,
so a burst of frames (patches that sync to the clock send a second's frames
together) never holds a critical reading for longer than that. Past what it
can take, the session's inbox fills, the socket is not read, and the broker
keeps the rest (MQTT's window of unacknowledged messages): the backlog of ECG
frames waits at the broker, on the ECG session's queue, never on the
critical session's.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Container
from datetime import datetime
from typing import Protocol

from gateway.ingress import DeviceRegistry, decode_message
from gateway.vendor_ecg_timing import VendorEcgTimeBase
from shards.lanes import device_of
from stream.core import Counters, StreamCore
from stream.models import Accepted, Rejected

log = logging.getLogger("vitalgate.ecg_lane")

INGEST_SLICE_S = 0.005  # work between two turns of the event loop

Ack = Callable[[], None]


class DurableAck(Protocol):
    """What `outbound.store_and_forward.StoreAndForward` offers the lane: ack once the commit is done."""

    def when_durable(self, acc: Accepted, ack: Ack) -> None: ...


class EcgLane:
    def __init__(
        self,
        prefix: str,
        registry: DeviceRegistry,
        critical_devices: Container[str],
        core: StreamCore,
        forwarding: DurableAck,
        counters: Counters,
        on_committed: Callable[[], None],
        clock: Callable[[], datetime],
        ecg_time: VendorEcgTimeBase | None = None,
    ) -> None:
        self._prefix = prefix
        self._clinic = prefix.split("/", 1)[1]
        self._registry = registry
        self._critical = critical_devices
        self._core = core
        self._forwarding = forwarding
        self._counters = counters
        self._on_committed = on_committed
        self._clock = clock
        # Binary (vendor) frames carry no time: their time base, kept across the messages of each device.
        self._ecg_time = ecg_time if ecg_time is not None else VendorEcgTimeBase()
        self._slice_end = 0.0

    async def on_message(self, topic: str, payload: bytes, ack: Ack) -> None:
        """The ECG session's handler (`MqttLink(manual_ack=True)`)."""
        try:
            await self._handle(topic, payload, ack)
        except Exception:  # nothing a device sends may take the gateway down
            log.exception("unexpected error handling a message", extra={"topic": topic})
            self._counters.rejected["internal_error"] += 1
            ack()
        now = time.perf_counter()
        if now >= self._slice_end:
            if self._slice_end:
                await asyncio.sleep(0)  # the critical lane's turn
            self._slice_end = time.perf_counter() + INGEST_SLICE_S

    async def _handle(self, topic: str, payload: bytes, ack: Ack) -> None:
        if device_of(topic, self._prefix) in self._critical:
            ack()  # the critical session carries this device's messages (shards/lanes.py)
            return
        result = decode_message(topic, payload, self._clinic, self._registry, self._clock(), self._ecg_time)
        if isinstance(result, Rejected):
            self._counters.reject(result)
            ack()
            return
        try:
            await self._core.process(result)
        except Exception as exc:  # as the stream core's patient worker: one bad reading never stops the lane
            log.exception("failed to process a reading", extra={"patient_id": result.patient_id})
            self._counters.rejected["internal_error"] += 1
            if isinstance(exc, sqlite3.Error):
                return  # not stored: left unacknowledged, the broker redelivers it
        self._forwarding.when_durable(result, self._acker(ack))

    def _acker(self, ack: Ack) -> Ack:
        def acked() -> None:  # after the commit: the frame is in the log the analysis reads
            ack()
            self._on_committed()

        return acked
