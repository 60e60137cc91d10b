"""The asyncio stream core: per-patient ordered processing of accepted readings.

Each patient has one bounded queue and one worker task, so a patient's
readings are judged in arrival order while patients run side by side.

Overload: `submit` awaits when the patient's queue is full. That back-pressure
reaches the MQTT consumer, which stops reading; the broker then holds the QoS 1
messages (our session is persistent), so overload delays readings and never
drops them. Alerts do not queue behind telemetry: findings go straight to the
dispatcher, whose outbox is drained by its own task.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Protocol

from stream import plausibility, rules
from stream.models import Accepted, EcgFrame, EcgStripReading, EcgSummary, Finding, Rejected, ScreenedStrip, now_local
from stream.strip_screening import screen_strip
from stream.thresholds import Thresholds

log = logging.getLogger("vitalgate.stream")


class ReadingSink(Protocol):
    """Where the core stores a reading: `stream.store.ReadingStore`, or in the gateway
    `outbound.store_and_forward.StoreAndForward`, which also stages it for the uplink and the TSDB."""

    def add(self, acc: Accepted) -> bool: ...  # False: already stored (a duplicate)


class EcgSeam(Protocol):
    """What the core hands an ECG frame to: the analyser in-process (`EcgFrameTracker`), or on the
    gateway's ECG lane `shards.ecg_analysis.DeferredEcg`, which leaves the analysis to the frame log."""

    def push(
        self, patient_id: str, device_id: str, frame: EcgFrame
    ) -> tuple[list[Finding], EcgSummary | None, list[str]]: ...


ReadingPublisher = Callable[[Accepted], Awaitable[None]]
FindingHandler = Callable[[Finding], Awaitable[object]]

_STOP = object()


class Counters:
    """Accepted by kind, rejected by reason: what the status message shows."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.last_rejections: list[dict] = []

    def reject(self, r: Rejected) -> None:
        self.rejected[r.reason] += 1
        self.last_rejections = [
            *self.last_rejections[-9:],
            {"reason": r.reason, "detail": r.detail, "device_id": r.device_id},
        ]
        log.warning("rejected reading: %s", r.detail, extra={"reason": r.reason, "device_id": r.device_id})


class StreamCore:
    def __init__(
        self,
        store: ReadingSink,
        thresholds: dict[str, Thresholds],
        default_thresholds: Thresholds,
        publish_reading: ReadingPublisher,
        on_finding: FindingHandler,
        counters: Counters,
        ecg: EcgSeam,
        queue_size: int = 1000,
        clock: Callable[[], datetime] = now_local,
    ) -> None:
        self.store = store
        self._thresholds = thresholds
        self._default = default_thresholds
        self._publish = publish_reading
        self._on_finding = on_finding
        self.counters = counters
        self._ecg = ecg
        self._queue_size = queue_size
        self._clock = clock
        self._queues: dict[str, asyncio.Queue] = {}
        self._workers: dict[str, asyncio.Task] = {}
        self._state: dict[str, rules.PatientRuleState] = {}
        self.device_last_seen: dict[str, datetime] = {}

    def thresholds_for(self, patient_id: str) -> Thresholds:
        return self._thresholds.get(patient_id, self._default)

    async def submit(self, acc: Accepted, on_stored: Callable[[], None] | None = None) -> None:
        """Queue a reading for its patient's worker.

        `on_stored` is called once the worker is done with the reading (stored,
        a duplicate, or rejected as implausible): the MQTT link acknowledges the
        message to the broker then, so a crash before that loses nothing
        (at-least-once ingestion). It is not called when storing failed with a
        database error: the unacknowledged message is redelivered instead.
        """
        q = self._queues.get(acc.patient_id)
        if q is None:
            q = self._queues[acc.patient_id] = asyncio.Queue(maxsize=self._queue_size)
            self._workers[acc.patient_id] = asyncio.create_task(
                self._worker(acc.patient_id, q), name=f"patient-{acc.patient_id}"
            )
        await q.put((acc, on_stored))  # back-pressure, see the module docstring

    def queue_depth(self) -> int:
        return sum(q.qsize() for q in self._queues.values())

    async def drain(self) -> None:
        """Process everything queued, then stop the workers (used on shutdown)."""
        for q in self._queues.values():
            await q.put(_STOP)
        if self._workers:
            await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._queues.clear()
        self._workers.clear()

    async def _worker(self, patient_id: str, q: asyncio.Queue) -> None:
        while True:
            item = await q.get()
            if item is _STOP:
                return
            acc, on_stored = item
            try:
                await self.process(acc)
            except Exception as exc:  # one bad reading must never stop a patient's stream
                log.exception("failed to process a reading", extra={"patient_id": patient_id})
                self.counters.rejected["internal_error"] += 1
                if isinstance(exc, sqlite3.Error):
                    continue  # not stored: leave it unacknowledged, the broker redelivers it
            if on_stored is not None:
                on_stored()
            if q.qsize():
                # Take turns: processing a reading need not suspend (the republish is not awaited), so
                # without this one patient's burst would run to its end while every other patient, the
                # dispatcher and the MQTT link wait, and readings would be judged and forwarded
                # patient by patient instead of in the order they arrived.
                await asyncio.sleep(0)

    async def process(self, acc: Accepted) -> None:
        th = self.thresholds_for(acc.patient_id)
        bad = plausibility.check(acc, th.plausibility, self._clock())
        if bad is not None:
            self.counters.reject(bad)
            return
        if isinstance(acc.reading, EcgStripReading):
            screened = await screen_strip(acc)  # in a worker thread (stream/strip_screening.py)
            if isinstance(screened, Rejected):
                self.counters.reject(screened)
                return
            acc = screened
        if not self.store.add(acc):
            self.counters.rejected["duplicate"] += 1
            return
        self.counters.accepted[acc.reading.kind] += 1
        self.device_last_seen[acc.device_id] = acc.received_at
        findings: list[Finding]
        if isinstance(acc.reading, EcgFrame):
            findings, summary, notes = self._ecg.push(acc.patient_id, acc.device_id, acc.reading)
            for note in notes:
                log.info("ecg frame: %s", note, extra={"device_id": acc.device_id})
            if summary is not None:
                await self._publish(self._summary(acc, summary))
        elif isinstance(acc.reading, ScreenedStrip):
            await self._publish(acc)  # the result without the samples; a screening: no rule, nobody paged
            findings = []
        else:
            await self._publish(acc)
            state = self._state.get(acc.patient_id)
            if state is None:  # (not setdefault: that would build a state per reading to throw away)
                state = self._state[acc.patient_id] = rules.PatientRuleState()
            findings = rules.evaluate(acc, state, th)
        for f in findings:
            await self._on_finding(f)

    def restore(self, patient_id: str, history: Iterable[Accepted]) -> int:
        """Rebuild a patient's rule state from stored readings, oldest arrival first (after a restart).

        The findings these readings produced were dispatched when they first arrived; here they
        only rebuild the windows and pending confirmations, so nothing is raised twice."""
        th = self.thresholds_for(patient_id)
        state = rules.PatientRuleState()
        n = 0
        for acc in history:
            rules.evaluate(acc, state, th)
            n += 1
        self._state[patient_id] = state
        return n

    @staticmethod
    def _summary(acc: Accepted, summary: EcgSummary) -> Accepted:
        return Accepted(
            reading=summary,
            patient_id=acc.patient_id,
            device_id=acc.device_id,
            received_at=acc.received_at,
            source="internal",
            idempotency_key=f"summary-{acc.idempotency_key}",
        )
