"""Store-and-forward to the county center's broker (the config's `uplink:`).

What is forwarded, on the same topics as on the clinic's broker:
- every accepted reading, `vg/{clinic}/patient/{patient_id}/reading` (ECG as
  the per-minute `ecg_summary`, never raw frames: rural uplinks are thin);
- every alert transition the dispatcher sends, `vg/{clinic}/alert/{tier}`;
- the gateway status, `vg/{clinic}/status`, retained; the uplink connection's
  last will sets it to offline on the county broker.

What comes back: the county acknowledges (and may snooze or silence) on the clinic's
own control topics on its broker, `vg/{clinic}/ack`, `.../snooze`, `.../silence`.
The uplink subscribes to them and hands each message to the gateway (`listen`),
which applies it exactly as one from the clinic's broker; the session is persistent,
so an acknowledgement sent while the clinic was offline arrives when it is back. An
acknowledgement that comes twice, or by both brokers, counts once: acknowledging an
alert that is no longer firing changes nothing.

Nothing is lost while the uplink is down: readings and alerts go to a durable
outbox (`uplink_outbox.db`, see `outbound/uplink_outbox.py`) before the local
broker is acknowledged, and are sent when the county broker is back, **alerts
first**, then telemetry in the order it was accepted (so per patient in
order). The outbox is bounded (`uplink.max_outbox` telemetry messages); when
it is full the oldest telemetry is dropped, never an alert, and the gateway
raises a technical alert (see `DropAlarm`).

Dedupe at the county: delivery is at-least-once, so a message can arrive twice
(a connection drops before its PUBACK, the gateway is killed mid-drain). Every
message carries the MQTT 5 user property `msg_id`: a reading's idempotency key
(the same for every copy of one measurement, however often the device or the
broker resent it) or, for an alert, a hash of topic and payload (the same for a
resent transition). A county broker that only speaks MQTT 3.1.1 gets no user
properties; the natural keys in the payload then identify duplicates:
(`device_id`, `kind`, `ts`, `seq`) for a reading, (`alert_id`, `tier`,
`state`, `updated_at`) for an alert.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dispatch.control import CONTROL_TOPICS
from gateway.mqtt_link import MqttLink, NotConnected
from outbound.uplink_outbox import PRIORITY_ALERT, PRIORITY_TELEMETRY, DropReport, OutboxRow, UplinkOutbox
from stream.models import Accepted, Condition, Finding, now_local
from stream.waiting import wait_any

log = logging.getLogger("vitalgate.uplink")

DRAIN_BATCH = 500  # messages read from the outbox and put on the wire per round
IDLE_POLL_S = 1.0
RETRY_AFTER_FAILURE_S = 1.0
STATUS_RETRY_S = 5.0
# The technical alert raised when telemetry is dropped clears once the backlog is below this share.
DROP_ALARM_CLEARS_BELOW = 0.5
# Alerts about the gateway itself (not a patient) carry this in `patient_id`.
GATEWAY_SUBJECT = "gateway"

UPLINK_OUTBOX_FILE = "uplink_outbox.db"


@dataclass(frozen=True)
class _Will:
    topic: str
    payload: str
    qos: int = 1
    retain: bool = True


def alert_msg_id(topic: str, payload: str | bytes) -> str:
    """Same transition resent -> same id (the payload carries alert_id, state, tier and updated_at)."""
    body = payload.encode() if isinstance(payload, str) else payload
    return "a-" + hashlib.blake2b(topic.encode() + b"\x00" + body, digest_size=12).hexdigest()


class DropAlarm:
    """Turns outbox drops into the technical alert `missed_readings` about the gateway itself.

    The county will miss these readings, which is what `missed_readings`
    means; the alert's `patient_id` is `gateway` (it is about the box, not a
    patient) and its evidence says why (`uplink_outbox_full`), how many
    readings were dropped in total and for which patients. It is raised on the
    first drop, updated by later ones, and resolved once the backlog is below
    half the bound again. Routing is the condition's (village, low, by default).
    """

    def __init__(
        self, raise_finding: Callable[[Finding], Coroutine[Any, Any, object]], clock: Callable[[], datetime] = now_local
    ) -> None:
        self._raise = raise_finding
        self._clock = clock
        self.active = False
        self.by_patient: dict[str, int] = {}
        self.total = 0
        self._tasks: set[asyncio.Task] = set()

    def dropped(self, report: DropReport, max_outbox: int) -> None:
        self.total += report.dropped
        for p, n in report.by_patient.items():
            self.by_patient[p] = self.by_patient.get(p, 0) + n
        log.error(
            "uplink outbox full (%d telemetry messages): dropped the %d oldest readings (%d in total); "
            "alerts are never dropped",
            max_outbox,
            report.dropped,
            self.total,
            extra={"dropped": report.dropped, "dropped_total": self.total},
        )
        self.active = True
        self._send(
            Finding(
                patient_id=GATEWAY_SUBJECT,
                condition=Condition.MISSED_READINGS,
                at=self._clock(),
                evidence={
                    "technical": "uplink_outbox_full",
                    "max_outbox": max_outbox,
                    "dropped_total": self.total,
                    "dropped_by_patient": dict(self.by_patient),
                },
            )
        )

    def backlog(self, pending_telemetry: int, max_outbox: int) -> None:
        if self.active and pending_telemetry < max_outbox * DROP_ALARM_CLEARS_BELOW:
            self.active = False
            self._send(
                Finding(
                    patient_id=GATEWAY_SUBJECT,
                    condition=Condition.MISSED_READINGS,
                    active=False,
                    at=self._clock(),
                    evidence={"technical": "uplink_outbox_full"},
                )
            )

    def _send(self, f: Finding) -> None:
        t = asyncio.get_running_loop().create_task(self._raise(f))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)


class OutboxSide:
    """What goes into the county outbox, the same for both uplinks (this MQTT one and
    `outbound/nats_uplink.py`): readings staged and committed per tick, alerts committed at once, the
    latest status kept in memory. A subclass sends the rows; `_wake` tells its drain there is more."""

    def _init_outbox(
        self,
        clinic: str,
        storage: Path | str,
        max_outbox: int,
        on_drop: Callable[[DropReport, int], None] | None,
        on_backlog: Callable[[int, int], None] | None,
    ) -> None:
        self.clinic = clinic
        self.prefix = f"vg/{clinic}"
        self.outbox = UplinkOutbox(Path(storage) / UPLINK_OUTBOX_FILE, max_outbox=max_outbox)
        self._on_drop = on_drop
        self._on_backlog = on_backlog
        self._wake = asyncio.Event()
        self._status: str | None = None
        self._status_sent: str | None = None

    def stage(self, acc: Accepted) -> None:
        """Buffer a reading for the county (ECG frames never go; their summaries do)."""
        if acc.reading.kind == "ecg":
            return
        self.outbox.stage(
            acc.idempotency_key,
            PRIORITY_TELEMETRY,
            f"{self.prefix}/patient/{acc.patient_id}/reading",
            acc.public_json(),
            patient_id=acc.patient_id,
        )

    def flush(self) -> None:
        """Commit staged readings (raises sqlite3.Error and keeps them if the disk refuses)."""
        report = self.outbox.flush()
        if report is not None and report.dropped and self._on_drop is not None:
            self._on_drop(report, self.outbox.max_outbox)
        self._wake.set()

    @property
    def has_staged(self) -> bool:
        return self.outbox.has_staged

    def enqueue_alert(self, topic: str, payload: str) -> None:
        """Durably queue one alert message for the county before it is marked delivered locally."""
        self.outbox.stage(alert_msg_id(topic, payload), PRIORITY_ALERT, topic, payload)
        self.flush()

    def set_status(self, payload: str) -> None:
        """The latest status; only the newest matters (retained), so it is kept in memory."""
        self._status = payload
        self._wake.set()


class Uplink(OutboxSide):
    """The county broker connection and the drain of the uplink outbox.

    `stage`/`flush` make it an outbox of the gateway's store-and-forward
    (`outbound/store_and_forward.py`): readings are staged with the reading
    store's write and committed before the local broker is acknowledged.
    """

    def __init__(
        self,
        clinic: str,
        storage: Path,
        host: str,
        port: int,
        max_outbox: int = 100_000,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        keepalive: int = 30,
        cert_file: str | None = None,
        key_file: str | None = None,
        on_drop: Callable[[DropReport, int], None] | None = None,
        on_backlog: Callable[[int, int], None] | None = None,
    ) -> None:
        self._init_outbox(clinic, storage, max_outbox, on_drop, on_backlog)
        self._control: Callable[[str, bytes], Awaitable[None]] | None = None
        self.link = MqttLink(
            host,
            port,
            client_id=f"vitalgate-{clinic}-uplink",
            subscriptions=[f"{self.prefix}/ack", *[f"{self.prefix}/{t}" for t in CONTROL_TOPICS]],
            on_message=self._from_county,
            will=_Will(f"{self.prefix}/status", json.dumps({"clinic": clinic, "online": False})),
            username=username,
            password=password,
            tls=tls,
            ca_file=ca_file,
            keepalive=keepalive,
            cert_file=cert_file,
            key_file=key_file,
            # what goes out survives in the outbox; the session keeps what comes back (county acks)
            # while the clinic is offline
            persistent=True,
            protocol="auto",  # MQTT 5 for the msg_id user property; 3.1.1 brokers still work
        )
        self.failures = 0

    # ------------------------------------------------------------ what comes back

    def listen(self, handler: Callable[[str, bytes], Awaitable[None]]) -> None:
        """Hand the county's control messages (ack, snooze, silence on this clinic's topics) to ``handler``."""
        self._control = handler

    async def _from_county(self, topic: str, payload: bytes) -> None:
        if self._control is None:
            log.warning("county control message before the gateway listens; dropped", extra={"topic": topic})
            return
        await self._control(topic, payload)

    # ------------------------------------------------------------ draining

    async def run(self, stop: asyncio.Event) -> None:
        link_stop = asyncio.Event()
        link_task = asyncio.create_task(self.link.run(link_stop), name="uplink-mqtt")
        try:
            await self._drain_until(stop)
        finally:
            link_stop.set()
            await link_task

    async def finish(self, timeout_s: float) -> None:
        """On shutdown: send what can be sent within `timeout_s` (the rest waits in the outbox)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and self.link.connected.is_set():
            if self.outbox.pending == 0 and self._status == self._status_sent:
                return
            await asyncio.sleep(0.05)

    async def _drain_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self.link.connected.is_set():
                await wait_any(stop, self.link.connected)
                continue
            try:
                await self._send_status()
                sent = await self._send_batch()
            except NotConnected as exc:
                self.failures += 1
                log.warning("uplink send failed, will resend: %s", exc)
                await wait_any(stop, timeout=RETRY_AFTER_FAILURE_S)
                continue
            if sent == 0:
                self._wake.clear()
                await wait_any(stop, self._wake, timeout=IDLE_POLL_S)

    async def _send_status(self) -> None:
        status = self._status
        if status is None or status == self._status_sent:
            return
        await self.link.publish(f"{self.prefix}/status", status, qos=1, retain=True)
        self._status_sent = status

    async def _send_batch(self) -> int:
        rows = self.outbox.next_batch(DRAIN_BATCH)
        if not rows:
            return 0
        futures = []
        refused: NotConnected | None = None
        for r in rows:  # issued in order, so they are on the wire in order
            try:
                futures.append(
                    await self.link.start_publish(
                        r.topic, r.payload, qos=1, retain=r.retain, user_properties=[("msg_id", r.msg_id)]
                    )
                )
            except NotConnected as exc:
                refused = exc
                break
        results: list = list(await asyncio.gather(*futures, return_exceptions=True))
        if refused is not None:
            results.append(refused)
        # Mark only the acknowledged prefix: anything after a failure is resent, so order holds.
        ok: list[OutboxRow] = []
        error: BaseException | None = None
        for r, res in zip(rows, results):
            if isinstance(res, BaseException):
                error = res
                break
            ok.append(r)
        self.outbox.mark_sent(ok)
        if self._on_backlog is not None:
            self._on_backlog(self.outbox.pending_telemetry, self.outbox.max_outbox)
        if error is not None:
            raise error if isinstance(error, NotConnected) else NotConnected(str(error))
        return len(ok)

    def counts(self) -> dict:
        return {"connected": self.link.connected.is_set(), **self.outbox.counts(), "send_failures": self.failures}

    def close(self) -> None:
        self.outbox.close()
