"""`vitalgate county`: one county-centre process.

It joins the partition sharing (county/partitions.py), reads the partitions it holds from the log
in batches, stores each batch in one durable transaction (county/store.py) and only then
acknowledges it to the log; and it serves the API and the page (county/web.py). Any number of
these run on one config. SIGINT/SIGTERM: stop reading, give the leases back (so the others take
over at once instead of after the TTL), finish the batch in hand, close; exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable

from county.config import CountyConfig
from county.engine import Delivery, EngineUnavailable, NatsLog
from county.partitions import PartitionSharing
from county.store import CountyStore
from county.uplinked import Unreadable, parse

log = logging.getLogger("vitalgate.county")

FETCH_WAIT_S = 1.0  # a reader's long poll; also the longest a stop waits for it
RETRY_S = 0.5
CONNECT_RETRY_S = 1.0


def member_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class CountyService:
    def __init__(self, cfg: CountyConfig, http_port: int | None = None) -> None:
        self.cfg = cfg
        self.member = member_id()
        self.http_port = cfg.http.port if (http_port is None and cfg.http is not None) else (http_port or 0)
        self.store = CountyStore(cfg.storage.path, process=self.member)
        self.log = NatsLog(
            cfg.engine.nats,
            cfg.partitions,
            cfg.engine.replicas,
            ack_wait_s=cfg.consume.ack_wait_s,
            lease_ttl_s=cfg.consume.lease_ttl_s,
            retention_s=cfg.retention_days * 86_400.0,
            name=f"vitalgate-county-{self.member}",
        )
        self.sharing = PartitionSharing(
            self.log,
            cfg.partitions,
            self.member,
            cfg.consume.lease_ttl_s,
            on_gain=self._start_reader,
            on_lose=self._stop_reader,
        )
        self._readers: dict[int, tuple[asyncio.Task, asyncio.Event]] = {}
        self.counters = {
            "stored": 0,
            "duplicates": 0,
            "alert_events": 0,
            "statuses": 0,
            "unreadable": 0,
            "ack_mqtt_copies": 0,
            "ack_mqtt_copy_failures": 0,
            "fetch_errors": 0,
            "batches": 0,
        }
        self.started_at = time.time()
        self.ready = asyncio.Event()

    # ------------------------------------------------------------ the process

    async def run(self, stop: asyncio.Event | None = None) -> int:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        http_task = None
        if self.cfg.http is not None and self.http_port:
            from county.web import serve

            http_task = asyncio.create_task(serve(self, self.cfg.http.bind, self.http_port, stop), name="county-http")
        try:
            if not await self._connect(stop):
                return 0
            log.info("county %s: member %s joined, %d partitions", self.cfg.county, self.member, self.cfg.partitions)
            self.ready.set()
            await self.sharing.run(stop)
        finally:
            if self.ready.is_set():
                await self.sharing.release_all()
            for k in list(self._readers):
                await self._stop_reader(k)
            if http_task is not None:
                stop.set()
                await asyncio.gather(http_task, return_exceptions=True)
            await self.log.close()
            self.store.close()
        return 0

    async def _connect(self, stop: asyncio.Event) -> bool:
        """Connect and create the topology, retrying while the cluster comes up; False if stopped first.

        The client retries its servers forever by itself, so each attempt is raced against `stop`:
        SIGTERM while no server answers still stops the process at once."""
        connected = False
        while not stop.is_set():
            try:
                if not connected:
                    if not await _unless_stopped(self.log.connect(), stop):
                        return False
                    connected = True
                if await _unless_stopped(self.log.ensure_topology(), stop):
                    return True
                return False
            except Exception as exc:  # noqa: BLE001  (no quorum yet, a server restarting: retry until stopped)
                log.warning("county engine not ready: %r", exc)
                try:
                    await asyncio.wait_for(stop.wait(), CONNECT_RETRY_S)
                except TimeoutError:
                    pass
        return False

    # ------------------------------------------------------------ partition readers

    async def _start_reader(self, k: int) -> None:
        done = asyncio.Event()
        self._readers[k] = (asyncio.create_task(self._read(k, done), name=f"county-p{k}"), done)
        log.info("reading partition %d", k)

    async def _stop_reader(self, k: int) -> None:
        entry = self._readers.pop(k, None)
        if entry is None:
            return
        task, done = entry
        done.set()
        await asyncio.gather(task, return_exceptions=True)
        await self.log.drop_partition(k)
        log.info("stopped reading partition %d", k)

    async def _read(self, k: int, done: asyncio.Event) -> None:
        while not done.is_set():
            try:
                batch = await self.log.fetch(k, self.cfg.consume.batch, FETCH_WAIT_S)
            except EngineUnavailable as exc:
                self.counters["fetch_errors"] += 1
                log.debug("partition %d: %s", k, exc)
                await asyncio.sleep(RETRY_S)
                continue
            if batch:
                await self._store(batch)

    async def _store(self, batch: list[Delivery]) -> None:
        items = []
        for d in batch:
            item = parse(d.subject, d.data)
            if isinstance(item, Unreadable):
                self.counters["unreadable"] += 1
                log.warning("unreadable uplink message on %s: %s", item.subject, item.reason)
                continue
            items.append((item, d.msg_id, d.log_seq))
        counts = self.store.store_batch(items)  # committed (fsynced) before anything is acknowledged
        self.counters["batches"] += 1
        self.counters["stored"] += counts["readings"]
        self.counters["duplicates"] += counts["reading_duplicates"] + counts["alert_duplicates"]
        self.counters["alert_events"] += counts["alert_events"]
        self.counters["statuses"] += counts["statuses"]
        for d in batch:
            try:
                await d.ack()
            except Exception as exc:  # noqa: BLE001  (an ack lost now means a redelivery, stored once)
                log.debug("ack failed: %r", exc)

    # ------------------------------------------------------------ what the API asks

    async def acknowledge(self, alert_id: str, by: str) -> dict | None:
        """Send a county acknowledgement down to the alert's clinic as `vg/{clinic}/ack`."""
        import json

        alert = self.store.alert(alert_id)
        if alert is None:
            return None
        clinic = alert["clinic"]
        payload = json.dumps({"alert_id": alert_id, "by": by}).encode()
        await self.log.publish_control(clinic, "ack", payload, msg_id=f"county-ack-{uuid.uuid4().hex}")
        self.store.record_county_ack(alert_id, clinic, by)
        listeners = self.cfg.engine.mqtt_listeners()
        if listeners:  # the copy a gateway on the MQTT uplink gets even if it is away now (county/ack_copy.py)
            from county.ack_copy import publish_copy

            via = await asyncio.to_thread(
                publish_copy, listeners, f"county-{self.cfg.county}-{self.member}-ack", f"vg/{clinic}/ack", payload
            )
            self.counters["ack_mqtt_copies" if via else "ack_mqtt_copy_failures"] += 1
        return {"alert_id": alert_id, "clinic": clinic, "topic": f"vg/{clinic}/ack", "by": by}

    def health(self) -> dict:
        return {
            "ok": True,
            "county": self.cfg.county,
            "member": self.member,
            "ready": self.ready.is_set(),
            "partitions": sorted(self.sharing.owned),
            "members": self.sharing.members,
            "engine_connected": bool(self.log.nc and self.log.nc.is_connected),
            "engine_server": self.log.connected_url(),
            "counters": dict(self.counters),
            "uptime_s": round(time.time() - self.started_at, 1),
        }


async def _unless_stopped(aw: Awaitable[object], stop: asyncio.Event) -> bool:
    """Await `aw` unless `stop` comes first (then cancel it): True if it finished."""
    task = asyncio.ensure_future(aw)
    waiter = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task in done:
        task.result()
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False


def run_county(cfg: CountyConfig, http_port: int | None) -> int:
    return asyncio.run(CountyService(cfg, http_port).run())
