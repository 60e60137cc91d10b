"""A clinic gateway's uplink to the county over native NATS JetStream (the gateway side, as a library).

Same role and the same interface as the MQTT uplink (`outbound/uplink.py`: `stage`, `flush`,
`has_staged`, `enqueue_alert`, `set_status`, `run`, `finish`, `counts`, `close`) and the same
durable outbox (`outbound/uplink_outbox.py`): what the county has not acknowledged waits on disk,
alerts first. What differs is what "acknowledged" means:

* **Acknowledged by the replicated stream.** Each message is a JetStream publish; its
  acknowledgement comes from the stream after a quorum of servers (2 of 3) stored it. An MQTT
  PUBACK from a server's MQTT listener only means that server took the message: on this machine a
  3-node cluster lost 1,000 of 1,500 PUBACKed uplinks in 2 of 4 runs when one server died
  (docs/county.md). Only rows the stream acknowledged leave the outbox; the rest are resent.
* **Exactly once into the stream.** Every publish carries ``Nats-Msg-Id`` = clinic + the outbox's
  msg_id (a reading's idempotency key, an alert transition's hash; the clinic because device ids are
  only unique within a clinic, and the stream dedupes across all of them), so a resend after a lost
  acknowledgement is dropped by the stream (within its duplicate window) and by the county's store
  (for good).
* **Fail-over.** `servers` lists the cluster's client URLs, the preferred one first; when the
  server in use dies the client reconnects to another and the outbox resends what was unacknowledged.
* **Control from the county.** A durable consumer ``clinic-{clinic}`` on the county's control stream
  (`vg.{clinic}.ack`, `.snooze`, `.silence`) hands each message to `on_control(topic, payload)` with
  the MQTT spelling of the topic (``vg/{clinic}/ack``), exactly what the gateway's message handler
  takes from its clinic broker; it is acknowledged after the handler returns. An ack the county
  sent while this clinic was away is delivered when it is back.
* **Status.** Published on ``vg.{clinic}.status`` when it changes. NATS has no last will: a clean
  stop publishes ``{"online": false}`` itself; after a crash the county marks the clinic offline
  when its status is overdue (`offline_after_s`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from county.engine import CONTROL_STREAM, CONTROL_VERBS
from outbound.uplink import OutboxSide
from outbound.uplink_outbox import PRIORITY_TELEMETRY, DropReport, OutboxRow

log = logging.getLogger("vitalgate.uplink.nats")

DRAIN_BATCH = 500  # messages put on the wire per round, their acks awaited together
ACK_TIMEOUT_S = 5.0  # a publish the stream has not acknowledged by then is resent
IDLE_POLL_S = 1.0
RETRY_AFTER_FAILURE_S = 0.5
CONTROL_FETCH_S = 1.0
RECONNECT_WAIT_S = 0.25

ControlHandler = Callable[[str, bytes], Awaitable[None]]


def subject_of(topic: str) -> str:
    """`vg/c1/patient/p1/reading` -> `vg.c1.patient.p1.reading` (what a server's MQTT listener does too)."""
    return topic.replace("/", ".")


class NatsUplink(OutboxSide):
    def __init__(
        self,
        clinic: str,
        storage: Path,
        servers: list[str],
        max_outbox: int = 100_000,
        on_drop: Callable[[DropReport, int], None] | None = None,
        on_backlog: Callable[[int, int], None] | None = None,
        on_control: ControlHandler | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self._init_outbox(clinic, storage, max_outbox, on_drop, on_backlog)
        self.servers = list(servers)
        self._on_control = on_control
        self._user, self._password = user, password
        self.nc: nats.NATS | None = None
        self._js: JetStreamContext | None = None
        self.connected = asyncio.Event()
        self._alert_wake = asyncio.Event()
        self.failures = 0
        self.resent = 0
        self.control_received = 0
        self.express_alerts = 0  # alerts sent while a batch awaited its acks

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:  # not connected yet: as a closed connection to the callers' handlers
            raise nats.errors.ConnectionClosedError
        return self._js

    def listen(self, handler: ControlHandler) -> None:
        """Hand the county's control messages to ``handler`` (as the MQTT uplink's ``listen``)."""
        self._on_control = handler

    # ------------------------------------------------------------ what goes out (as outbound/uplink.py)

    def stage_raw(self, msg_id: str, topic: str, payload: str, patient_id: str | None = None) -> None:
        """Stage an already-encoded reading (tests and benches standing for a gateway)."""
        self.outbox.stage(msg_id, PRIORITY_TELEMETRY, topic, payload, patient_id=patient_id)

    def enqueue_alert(self, topic: str, payload: str) -> None:
        super().enqueue_alert(topic, payload)
        self._alert_wake.set()  # committed: a batch waiting for its acks sends it at once

    # ------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        await self._connect(stop)
        if self.nc is None:
            return
        control = asyncio.create_task(self._control_loop(stop), name="uplink-nats-control")
        try:
            await self._drain_until(stop)
        finally:
            control.cancel()
            await asyncio.gather(control, return_exceptions=True)
            await self._goodbye()  # acknowledged by the stream, so nothing is left to drain
            await self.nc.close()

    async def _connect(self, stop: asyncio.Event) -> None:
        async def disconnected() -> None:
            self.connected.clear()

        async def reconnected() -> None:
            self.connected.set()
            self._wake.set()

        async def quiet(exc: Exception) -> None:
            log.debug("nats: %r", exc)

        while not stop.is_set():
            try:
                self.nc = await nats.connect(
                    servers=self.servers,
                    name=f"vitalgate-{self.clinic}-uplink",
                    dont_randomize=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RECONNECT_WAIT_S,
                    connect_timeout=2,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=quiet,
                    user=self._user,
                    password=self._password,
                )
                self._js = self.nc.jetstream(timeout=ACK_TIMEOUT_S)
                self.connected.set()
                return
            except Exception as exc:  # noqa: BLE001  (no server reachable yet: the outbox keeps everything)
                log.warning("county uplink (NATS) cannot connect yet: %r", exc)
                try:
                    await asyncio.wait_for(stop.wait(), 2.0)
                except TimeoutError:
                    pass

    async def _drain_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._send_status()
                sent = await self._send_batch()
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                self.failures += 1
                log.warning("county uplink send failed, will resend: %r", exc)
                try:
                    await asyncio.wait_for(stop.wait(), RETRY_AFTER_FAILURE_S)
                except TimeoutError:
                    pass
                continue
            if sent == 0:
                self._wake.clear()
                try:  # woken by new rows or status; a stop is seen within IDLE_POLL_S
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
                except TimeoutError:
                    pass

    async def _send_status(self) -> None:
        status = self._status
        if status is None or status == self._status_sent:
            return
        await self._jetstream().publish(subject_of(f"{self.prefix}/status"), status.encode())
        self._status_sent = status

    async def _send_batch(self) -> int:
        rows = self.outbox.next_batch(DRAIN_BATCH)
        if not rows:
            return 0
        self._alert_wake.clear()
        futures, error = await self._issue(rows)  # issued in order; acks come back in any order
        acks = asyncio.ensure_future(
            asyncio.gather(*(asyncio.wait_for(f, ACK_TIMEOUT_S) for f in futures), return_exceptions=True)
        )
        # An alert staged while the stream acknowledges this batch does not wait for it (under load a
        # batch's acks take a second or more, bench/county_gateways.py): it goes out at once, from
        # here, so nothing else sends concurrently and nothing is marked twice.
        express: list[OutboxRow] = []
        express_futs: list[asyncio.Future] = []
        while not acks.done() and error is None:
            woken = asyncio.ensure_future(self._alert_wake.wait())
            await asyncio.wait({acks, woken}, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            if not self._alert_wake.is_set() or acks.done():
                continue
            self._alert_wake.clear()
            taken = {r.seq for r in rows} | {r.seq for r in express}
            late = [r for r in self.outbox.next_alerts(DRAIN_BATCH) if r.seq not in taken]
            futs, err = await self._issue(late)
            express += late[: len(futs)]
            express_futs += futs
            if err is not None:
                break  # the connection is failing: what was not issued stays pending, resent later
        results = list(await acks)
        express_results = await asyncio.gather(
            *(asyncio.wait_for(f, ACK_TIMEOUT_S) for f in express_futs), return_exceptions=True
        )
        ok: list[OutboxRow] = []
        for r, res in zip(rows, results):  # only the acknowledged prefix counts (per-patient order)
            if isinstance(res, BaseException):
                error = error or res
                break
            if getattr(res, "duplicate", False):
                self.resent += 1
            ok.append(r)
        self.express_alerts += sum(1 for res in express_results if not isinstance(res, BaseException))
        ok += [r for r, res in zip(express, express_results) if not isinstance(res, BaseException)]
        self.outbox.mark_sent(ok)
        if self._on_backlog is not None:
            self._on_backlog(self.outbox.pending_telemetry, self.outbox.max_outbox)
        if error is not None and not ok:
            raise error if isinstance(error, Exception) else RuntimeError(str(error))
        return len(ok)

    async def _issue(self, rows: list[OutboxRow]) -> tuple[list[asyncio.Future], BaseException | None]:
        """Publish `rows` in order; their ack futures, and the error that stopped the issuing (if any)."""
        futures = []
        for r in rows:
            payload = r.payload if isinstance(r.payload, bytes) else str(r.payload).encode()
            try:
                futures.append(
                    await self._jetstream().publish_async(
                        subject_of(r.topic),
                        payload,
                        headers={"Nats-Msg-Id": f"{self.clinic}:{r.msg_id}"},
                        wait_stall=ACK_TIMEOUT_S,
                    )
                )
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                return futures, exc
        return futures, None

    async def _goodbye(self) -> None:
        """NATS has no last will: say it ourselves on a clean stop."""
        if self.nc is None or not self.nc.is_connected:
            return
        from datetime import datetime, timedelta, timezone

        # updated_at: a stop the gateway reported itself, not a lost connection (the county tells them apart)
        last = {
            "clinic": self.clinic,
            "online": False,
            "updated_at": datetime.now(timezone(timedelta(hours=8))).isoformat(timespec="milliseconds"),
        }
        try:
            version = json.loads(self._status or "{}").get("version")
            if version:
                last["version"] = version
            await self._jetstream().publish(subject_of(f"{self.prefix}/status"), json.dumps(last).encode(), timeout=2)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError, ValueError):
            pass

    async def finish(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and self.connected.is_set():
            if self.outbox.pending == 0 and self._status == self._status_sent:
                return
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------ control from the county

    async def _control_loop(self, stop: asyncio.Event) -> None:
        if self._on_control is None:
            return
        sub = None
        while not stop.is_set():
            try:
                if sub is None:
                    sub = await self._control_subscription()
                msgs = await sub.fetch(50, timeout=CONTROL_FETCH_S)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                log.debug("control consumer not ready: %r", exc)  # the county creates the stream; wait for it
                sub = None
                await asyncio.sleep(RETRY_AFTER_FAILURE_S * 2)
                continue
            for m in msgs:
                try:
                    await self._on_control(m.subject.replace(".", "/"), m.data)
                    self.control_received += 1
                except Exception:  # noqa: BLE001  (a bad control message must not stop the uplink)
                    log.exception("control message from the county failed: %s", m.subject)
                await m.ack()

    async def _control_subscription(self) -> JetStreamContext.PullSubscription:
        name = f"clinic-{self.clinic}"
        await self._jetstream().add_consumer(
            CONTROL_STREAM,
            ConsumerConfig(
                durable_name=name,
                filter_subjects=[f"vg.{self.clinic}.{v}" for v in CONTROL_VERBS],
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
                deliver_policy=DeliverPolicy.NEW,
            ),
        )
        return await self._jetstream().pull_subscribe_bind(durable=name, stream=CONTROL_STREAM)

    # ------------------------------------------------------------ status

    def counts(self) -> dict:
        return {
            "connected": self.connected.is_set(),
            **self.outbox.counts(),
            "send_failures": self.failures,
            "duplicates_acknowledged": self.resent,
            "control_received": self.control_received,
            "express_alerts": self.express_alerts,
            "transport": "nats",
        }

    def close(self) -> None:
        self.outbox.close()
