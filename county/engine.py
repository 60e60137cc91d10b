"""The county's seam to its distributed log, and its NATS JetStream implementation.

The rest of the county (partition sharing, the store, the API) talks to an `UplinkLog` and
`PartitionLeases` only; `NatsLog` is the one implementation, built and tested on a 3-node
JetStream cluster. What a Kafka implementation would need is in docs/county.md.

Topology, created idempotently by `ensure_topology()` before anything is consumed:

* stream ``VG_UPLINK`` (replicas ``engine.replicas``, file storage, kept ``retention_days``):
  subjects ``vgp.>``, i.e. everything clinics uplink after the servers' subject mapping put it
  into a partition (county/engine_config.py). A native publisher's ``Nats-Msg-Id`` header is
  deduplicated by the stream within ``DUPLICATE_WINDOW_S``; the county's store dedupes for good.
* one durable pull consumer per partition, ``county-p{K}``, filtered on ``vgp.{K}.>``, explicit
  acks: a message is acknowledged after the store's transaction holding it has committed.
* stream ``VG_CONTROL``: ``vg.*.ack``, ``vg.*.snooze``, ``vg.*.silence`` -- what the county sends
  down to clinics. A live subscriber (a gateway on a server's MQTT listener, or a native one)
  gets it at once; a native uplink that was away replays it from its own durable consumer.
* KV bucket ``vg_county_leases``: who reads which partition (county/partitions.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from county.engine_config import PARTITIONED_PREFIX

_T = TypeVar("_T")

log = logging.getLogger("vitalgate.county.engine")

UPLINK_STREAM = "VG_UPLINK"
CONTROL_STREAM = "VG_CONTROL"
CONTROL_VERBS = ("ack", "snooze", "silence")
LEASE_BUCKET = "vg_county_leases"
DUPLICATE_WINDOW_S = 600.0  # a native uplink's resend of the same Nats-Msg-Id within this is stored once
CONTROL_RETENTION_S = 7 * 86_400.0
API_TIMEOUT_S = 5.0
MAX_ACK_PENDING = 20_000
RECONNECT_WAIT_S = 0.25
STREAM_EXISTS = 10058  # JetStream: stream name already in use with a different configuration


class EngineUnavailable(Exception):
    """The log cannot be reached or has no quorum right now; the caller retries."""


@dataclass(frozen=True)
class Delivery:
    """One uplinked message as the log delivered it (perhaps not for the first time)."""

    subject: str  # after the mapping: vgp.{K}.{clinic}.reading.{patient} | .alert.{tier} | .status
    data: bytes
    msg_id: str | None  # the native publisher's Nats-Msg-Id, when there was one
    log_seq: int  # the stream's sequence: later means later on the log
    redelivered: bool
    ack: Callable[[], Awaitable[None]]


class UplinkLog(Protocol):
    """What the county needs from a distributed log (the seam a Kafka adapter would fill)."""

    partitions: int

    async def connect(self) -> None: ...
    async def ensure_topology(self) -> None: ...
    async def fetch(self, partition: int, max_messages: int, timeout_s: float) -> list[Delivery]: ...
    async def publish_control(self, clinic: str, verb: str, payload: bytes, msg_id: str) -> None: ...
    async def close(self) -> None: ...


class PartitionLeases(Protocol):
    """Expiring ownership records shared by all county processes (time-to-live set by the implementation)."""

    async def heartbeat(self, member: str) -> None: ...
    async def leave(self, member: str) -> None: ...
    async def snapshot(self) -> tuple[list[str], dict[int, str]]: ...  # live members, partition -> owner
    async def claim(self, partition: int, member: str) -> bool: ...
    async def renew(self, partition: int, member: str) -> bool: ...
    async def release(self, partition: int, member: str) -> None: ...


def partition_subject(k: int) -> str:
    return f"{PARTITIONED_PREFIX}.{k}.>"


def consumer_name(k: int) -> str:
    return f"county-p{k}"


class NatsLog:
    """`UplinkLog` and `PartitionLeases` on a NATS JetStream cluster (nats-py)."""

    def __init__(
        self,
        servers: list[str],
        partitions: int,
        replicas: int = 3,
        *,
        ack_wait_s: float = 6.0,
        lease_ttl_s: float = 4.0,
        retention_s: float = 14 * 86_400.0,
        name: str = "vitalgate-county",
    ) -> None:
        self.servers = servers
        self.partitions = partitions
        self.replicas = min(replicas, len(servers))
        self.ack_wait_s = ack_wait_s
        self.lease_ttl_s = lease_ttl_s
        self.retention_s = retention_s
        self.name = name
        self.nc: nats.NATS | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._subs: dict[int, JetStreamContext.PullSubscription] = {}
        self._revisions: dict[int, int] = {}

    # ------------------------------------------------------------ connection and topology

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:  # not connected yet: as a closed connection to the callers' handlers
            raise nats.errors.ConnectionClosedError
        return self._js

    async def connect(self) -> None:
        async def quiet(exc: Exception) -> None:  # reconnects are expected when a server dies
            log.debug("nats: %s", exc)

        self.nc = await nats.connect(
            servers=self.servers,
            name=self.name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_S,
            connect_timeout=2,
            error_cb=quiet,
            allow_reconnect=True,
        )
        self._js = self.nc.jetstream(timeout=API_TIMEOUT_S)

    def connected_url(self) -> str | None:
        url = self.nc.connected_url if self.nc is not None and self.nc.is_connected else None
        return f"nats://{url.hostname}:{url.port}" if url is not None else None

    async def ensure_topology(self) -> None:
        """Streams, consumers and the lease bucket; safe to run from every process at every start."""
        js = self._js
        assert js is not None, "connect() first"
        await self._ensure_stream(
            StreamConfig(
                name=UPLINK_STREAM,
                subjects=[f"{PARTITIONED_PREFIX}.>"],
                num_replicas=self.replicas,
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S,
                max_age=self.retention_s,
                discard=DiscardPolicy.OLD,
                description="what clinic gateways uplink, by partition",
            )
        )
        await self._ensure_stream(
            StreamConfig(
                name=CONTROL_STREAM,
                subjects=[f"vg.*.{v}" for v in CONTROL_VERBS],
                num_replicas=self.replicas,
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_S,
                max_age=CONTROL_RETENTION_S,
                description="acknowledgements and other control the county sends down to clinics",
            )
        )
        for k in range(self.partitions):
            await js.add_consumer(
                UPLINK_STREAM,
                ConsumerConfig(
                    durable_name=consumer_name(k),
                    filter_subject=partition_subject(k),
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.ack_wait_s,
                    deliver_policy=DeliverPolicy.ALL,
                    max_ack_pending=MAX_ACK_PENDING,
                    max_waiting=64,
                    num_replicas=self.replicas,
                ),
            )
        try:
            self._kv = await js.create_key_value(
                bucket=LEASE_BUCKET, ttl=self.lease_ttl_s, replicas=self.replicas, history=1, storage=StorageType.FILE
            )
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_EXISTS:
                raise
            # The bucket exists with another TTL (consume.lease_ttl_s changed): bring it to this one.
            info = await js.stream_info(f"KV_{LEASE_BUCKET}")
            cfg = info.config
            if cfg.max_age != self.lease_ttl_s:
                log.warning("lease bucket TTL %.1fs -> %.1fs (consume.lease_ttl_s)", cfg.max_age or 0, self.lease_ttl_s)
            cfg.max_age = self.lease_ttl_s
            cfg.duplicate_window = min(self.lease_ttl_s, 120.0)
            await js.update_stream(cfg)
            self._kv = await js.key_value(LEASE_BUCKET)

    async def _ensure_stream(self, cfg: StreamConfig) -> None:
        js = self._jetstream()
        try:
            await js.add_stream(cfg)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_EXISTS:
                raise
            await js.update_stream(cfg)  # an older config (say, another retention): bring it to this one

    # ------------------------------------------------------------ consuming

    async def _sub(self, partition: int) -> JetStreamContext.PullSubscription:
        sub = self._subs.get(partition)
        if sub is None:
            sub = await self._jetstream().pull_subscribe_bind(durable=consumer_name(partition), stream=UPLINK_STREAM)
            self._subs[partition] = sub
        return sub

    async def fetch(self, partition: int, max_messages: int, timeout_s: float) -> list[Delivery]:
        try:
            sub = await self._sub(partition)
            msgs = await sub.fetch(max_messages, timeout=timeout_s)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            raise EngineUnavailable(f"fetch partition {partition}: {exc!r}") from exc
        out = []
        for m in msgs:
            md = m.metadata
            out.append(
                Delivery(
                    subject=m.subject,
                    data=m.data,
                    msg_id=(m.headers or {}).get("Nats-Msg-Id"),
                    log_seq=md.sequence.stream,
                    redelivered=md.num_delivered > 1,
                    ack=m.ack,
                )
            )
        return out

    async def drop_partition(self, partition: int) -> None:
        """Stop reading a partition here (its lease went to another process)."""
        sub = self._subs.pop(partition, None)
        if sub is not None:
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, OSError):
                pass

    async def publish_control(self, clinic: str, verb: str, payload: bytes, msg_id: str) -> None:
        """Publish on `vg.{clinic}.{verb}` (an MQTT subscriber sees `vg/{clinic}/{verb}`), stored on VG_CONTROL."""
        if verb not in CONTROL_VERBS:
            raise ValueError(f"not a control topic: {verb}")
        try:
            await self._jetstream().publish(f"vg.{clinic}.{verb}", payload, headers={"Nats-Msg-Id": msg_id})
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            raise EngineUnavailable(f"publish {verb} for {clinic}: {exc!r}") from exc

    async def close(self) -> None:
        # close, not drain: every stored message is acknowledged already, and draining the open pull
        # requests would wait for their expiry (or the 30 s drain timeout while a server is down)
        if self.nc is not None and not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.flush(), 2)
            except (TimeoutError, nats.errors.Error, OSError):
                pass
            await self.nc.close()

    # ------------------------------------------------------------ leases (PartitionLeases)

    async def heartbeat(self, member: str) -> None:
        await self._kv_call(self._bucket().put(f"m.{member}", b"1"))

    async def leave(self, member: str) -> None:
        await self._kv_call(self._bucket().delete(f"m.{member}"))

    async def snapshot(self) -> tuple[list[str], dict[int, str]]:
        """Live members and who owns which partition, read in one pass over the bucket."""

        async def read() -> tuple[list[str], dict[int, str]]:
            members: list[str] = []
            owners: dict[int, str] = {}
            watcher = await self._bucket().watchall(ignore_deletes=True)
            try:
                async for entry in watcher:
                    if entry is None:  # the end of what is there now
                        break
                    if entry.key.startswith("m."):
                        members.append(entry.key[2:])
                    elif entry.key.startswith("p.") and entry.value:
                        owners[int(entry.key[2:])] = entry.value.decode()
            finally:
                await watcher.stop()
            return sorted(members), owners

        return await self._kv_call(read())

    async def claim(self, partition: int, member: str) -> bool:
        try:
            rev = await self._kv_call(self._bucket().create(f"p.{partition}", member.encode()))
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        self._revisions[partition] = rev
        return True

    async def renew(self, partition: int, member: str) -> bool:
        last = self._revisions.get(partition)
        if last is None:
            return False
        try:
            rev = await self._kv_call(self._bucket().update(f"p.{partition}", member.encode(), last=last))
        except nats.js.errors.KeyWrongLastSequenceError:
            self._revisions.pop(partition, None)
            return False  # it expired and someone else holds it now
        self._revisions[partition] = rev
        return True

    async def release(self, partition: int, member: str) -> None:
        last = self._revisions.pop(partition, None)
        if last is None:
            return
        try:
            await self._kv_call(self._bucket().delete(f"p.{partition}", last=last))
        except nats.js.errors.KeyWrongLastSequenceError:
            pass

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise EngineUnavailable("the lease bucket is not open (not connected yet)")
        return self._kv

    async def _kv_call(self, aw: Awaitable[_T]) -> _T:
        try:  # bounded well under the lease TTL, so a tick never outlives the leases it renews
            return await asyncio.wait_for(aw, min(API_TIMEOUT_S, self.lease_ttl_s / 2))
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError, nats.js.errors.NoKeysError):
            raise
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            raise EngineUnavailable(f"lease bucket: {exc!r}") from exc
