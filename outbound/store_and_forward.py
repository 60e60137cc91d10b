"""Store and forward: the reading store, the forward outboxes (uplink, TSDB) and when to acknowledge.

Ingestion is at-least-once. The MQTT link hands each message over with an
`ack`; the stream core calls it (through `when_durable`) once it has handled
the reading, and this module holds it back until everything the reading
caused is on disk:

1. the reading is inserted in the reading store, in a transaction that
   groups every reading of this event-loop tick (one commit per tick, not
   per reading: a commit costs ~14 µs, an insert inside one ~2 µs),
2. its rows for the forward outboxes are *staged* (in memory), for a
   duplicate too,
3. at the end of the tick the reading store commits, then the staged
   outbox rows are committed,
4. only then are the local broker's messages acknowledged.

A SIGKILL anywhere before 4 leaves the message unacknowledged; the broker
redelivers it to our persistent session, the reading store reports it as a
duplicate (idempotency key), and staging it again is a no-op in the uplink
outbox (keyed by the same id, sent ids are remembered for a while) unless it
was missing, which is exactly the crash window between 1 and 3; the TSDB
rewrites the same point. So stored readings are always forwarded.

Storage failure (disk full, read-only, I/O error): a reading that cannot be
stored is still judged (rules, ECG, alerts: the core goes on with it), but it
is *not* acknowledged; it is kept in memory and stored as soon as the disk
takes writes again, then acknowledged. The broker keeps the unacknowledged
messages meanwhile, and its Receive Maximum bounds how many we hold.

Nearly full: readings are the bulk writer, so they stop first. Below
`MIN_FREE_BYTES` free in `storage.path` (checked before every reading is
written, and every second) readings are held as above instead of written,
and the reserve file (`RESERVE_FILE`, `RESERVE_BYTES`, created at start) is
deleted, so alert transitions and their outboxes still have room even when
something else filled the disk to the last byte. Once there is room for the
reserve again, it is re-created and the held readings are stored and
acknowledged. The error is logged once per episode, with what to do, and shown
in the status (`storage`).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from outbound.uplink import Uplink
from stream.models import Accepted, EcgFrame
from stream.store import ReadingStore

if TYPE_CHECKING:
    from outbound.nats_uplink import NatsUplink  # imported when configured: it needs nats-py

log = logging.getLogger("vitalgate.storage")

RESERVE_FILE = "reserve.space"
RESERVE_BYTES = 1024 * 1024  # kept free for alerts: deleted when the disk is nearly full
MIN_FREE_BYTES = 4 * 1024 * 1024  # below this, readings are held instead of written
RETRY_S = 1.0  # how often failed writes are tried again
SPACE_CHECK_S = 1.0  # free space is also checked this often when no reading comes in
SPACE_RECHECK_S = 0.1  # while readings flow, at most this often

Ack = Callable[[], None]


class ForwardOutbox(Protocol):
    """A way out to another system (the county uplink, the TSDB sink): its own outbox, its own sender task."""

    def stage(self, acc: Accepted) -> None: ...  # buffer; no I/O
    def flush(self) -> None: ...  # commit what is staged; raise sqlite3.Error and keep it on failure
    @property
    def has_staged(self) -> bool: ...
    async def run(self, stop: asyncio.Event) -> None: ...  # send from the outbox until `stop`
    def counts(self) -> dict: ...  # for the status message and /metrics
    def close(self) -> None: ...


def _is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) or (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EIO)
    )


class StoreAndForward:
    """The stream core's `ReadingSink` in the gateway (store, then stage); owns the uplink and the TSDB sink."""

    def __init__(
        self,
        store: ReadingStore,
        storage: Path,
        uplink: Uplink | NatsUplink | None = None,
        tsdb: ForwardOutbox | None = None,
        reserve_bytes: int = RESERVE_BYTES,
    ) -> None:
        self.store = store
        self.storage = Path(storage)
        self.uplink = uplink
        self.tsdb = tsdb
        self._outboxes: list[ForwardOutbox] = [o for o in (uplink, tsdb) if o is not None]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self._flush_failing = False
        self._after_flush: list[tuple[str, Ack]] = []  # (idempotency key, ack) waiting for the commit
        self._db = store._db  # see _begin
        self._txn_open = False
        self._txn: list[Accepted] = []  # readings inserted in the open transaction
        self._unstored: dict[str, Accepted] = {}  # idempotency key -> reading judged but not yet stored
        self._unstored_acks: dict[str, list[Ack]] = {}
        self._alerts_waiting: list[tuple[str, str]] = []  # uplink alert rows the disk refused
        self._reserve_bytes = reserve_bytes
        self._retry_handle: asyncio.TimerHandle | None = None
        self._low_space = False
        self._space_checked_at = -1e9
        self.storage_error: str | None = None
        self.storage_errors = 0
        self._ensure_reserve()

    # ------------------------------------------------------------ the stream core's side

    def add(self, acc: Accepted) -> bool:
        """Stage for forwarding, then store. False for a duplicate (as `ReadingStore.add`).

        On a storage error the reading is kept for a retry and reported as new,
        so it is still judged; its ack waits until it is stored.
        """
        key = acc.idempotency_key
        if key in self._unstored:
            return False  # redelivered while we still hold it: already judged
        if self._unstored:  # others are held: this one waits behind them, so order is kept
            self._unstored[key] = acc
            self._kick_retry()
            return True
        try:
            self._check_space()
            self._begin()
            new = self.store.add(acc)
        except Exception as exc:
            if not _is_storage_error(exc):
                raise
            # Not staged either: on a full disk the reserve is for alerts, not for outbox rows.
            self._storage_failed(exc)
            self._abandon_transaction()
            self._unstored[key] = acc
            self._kick_retry()
            return True
        self._txn.append(acc)
        if not isinstance(acc.reading, EcgFrame):
            self._stage(acc)
        if self.storage_error is not None and not self._unstored and not self._flush_failing:
            self._storage_recovered()
        return new

    def forward(self, acc: Accepted) -> None:
        """Forward a reading the gateway derived itself (ECG summaries): not stored, only forwarded."""
        self._stage(acc)

    def when_durable(self, acc: Accepted, ack: Ack) -> None:
        """Call `ack` once the reading and everything staged with it is committed."""
        key = acc.idempotency_key
        if key in self._unstored:
            self._unstored_acks.setdefault(key, []).append(ack)
        elif (
            self._flush_scheduled or self._flush_failing or self._txn_open or any(o.has_staged for o in self._outboxes)
        ):
            self._after_flush.append((key, ack))
        else:
            ack()

    def ack_after(self, acc: Accepted, ack: Ack) -> Ack:
        """An `on_stored` callback for `StreamCore.submit`."""
        return lambda: self.when_durable(acc, ack)

    # ------------------------------------------------------------ alerts and status for the county

    def on_alert(self, topic: str, payload: str) -> None:
        """Queue an alert message for the county (durably) before the local delivery is recorded."""
        if self.uplink is None:
            return
        try:
            self.uplink.enqueue_alert(topic, payload)
        except Exception as exc:
            if not _is_storage_error(exc):
                raise
            # Never let a full disk stop the local delivery; keep it for the county in memory meanwhile.
            self._storage_failed(exc)
            self._alerts_waiting.append((topic, payload))
            self._kick_retry()

    def on_status(self, payload: str) -> None:
        if self.uplink is not None:
            self.uplink.set_status(payload)

    # ------------------------------------------------------------ committing

    def _stage(self, acc: Accepted) -> None:
        for o in self._outboxes:
            o.stage(acc)
        if self._outboxes:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._get_loop().call_soon(self._flush)

    def _begin(self) -> None:
        """Open this tick's reading-store transaction (committed by `_flush`).

        ReadingStore has no transaction API; its connection is in autocommit
        mode (isolation_level=None), so an explicit BEGIN groups the inserts.
        """
        if not self._txn_open:
            self._db.execute("BEGIN")
            self._txn_open = True
            self._schedule_flush()

    def _abandon_transaction(self) -> None:
        """A write or the commit failed: roll back, and hold every reading of the transaction for a retry.

        (After SQLITE_FULL or an I/O error SQLite may already have rolled the
        whole transaction back, so none of it can be taken as stored.)
        """
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self._txn_open = False
        held, self._txn = self._txn, []
        for acc in held:
            self._unstored.setdefault(acc.idempotency_key, acc)
        keep = []
        for key, ack in self._after_flush:
            if key in self._unstored:
                self._unstored_acks.setdefault(key, []).append(ack)
            else:
                keep.append((key, ack))
        self._after_flush = keep

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _flush(self) -> bool:
        self._flush_scheduled = False
        if self._txn_open:
            try:
                self._db.execute("COMMIT")
                self._txn_open = False
                self._txn = []
            except Exception as exc:
                if not _is_storage_error(exc):
                    raise
                self._storage_failed(exc)
                self._abandon_transaction()
                self._flush_failing = True
                self._kick_retry()
                return False
        for o in self._outboxes:
            try:
                o.flush()
            except Exception as exc:
                if not _is_storage_error(exc):
                    raise
                self._storage_failed(exc)
                self._flush_failing = True
                self._kick_retry()
                return False
        self._flush_failing = False
        acks, self._after_flush = self._after_flush, []
        for key, ack in acks:
            if key in self._unstored:
                self._unstored_acks.setdefault(key, []).append(ack)
            else:
                ack()
        return True

    def flush_now(self) -> None:
        """Commit what is staged now (shutdown)."""
        if self._flush_scheduled or self._flush_failing or self._txn_open or any(o.has_staged for o in self._outboxes):
            self._flush()

    # ------------------------------------------------------------ storage failures

    def _free_bytes(self) -> int | None:
        try:
            st = os.statvfs(self.storage)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def _space_low(self) -> bool:
        free = self._free_bytes()
        if free is None:
            return False
        # Leave the low state only with room for the reserve again (no flapping at the threshold).
        need = MIN_FREE_BYTES + (self._reserve_bytes if self._low_space else 0)
        return free < need

    def _check_space(self) -> None:
        """Raise ENOSPC before writing a reading when the disk is nearly full.

        statvfs at most every SPACE_RECHECK_S while there is room: a burst
        between two checks is far smaller than MIN_FREE_BYTES.
        """
        now = time.monotonic()
        if self._low_space or now - self._space_checked_at >= SPACE_RECHECK_S:
            self._space_checked_at = now
            self._low_space = self._space_low()
        if self._low_space:
            raise OSError(
                errno.ENOSPC,
                f"less than {MIN_FREE_BYTES // 2**20} MiB free in {self.storage} "
                "(nearly full); readings are held, the rest is kept for alerts",
            )

    def _storage_failed(self, exc: BaseException) -> None:
        self.storage_errors += 1
        if self.storage_error is None:
            released = self._release_reserve()
            log.error(
                "cannot write to storage in %s: %s. Readings are still judged and alerts still go out, but "
                "readings are acknowledged to the broker only once stored (the broker keeps them meanwhile). "
                "Free space in storage.path or fix its permissions.%s",
                self.storage,
                exc,
                " Released the reserve file for alerts." if released else "",
                extra={"storage": str(self.storage)},
            )
        self.storage_error = f"{type(exc).__name__}: {exc}"

    def _storage_recovered(self) -> None:
        log.warning("storage writable again in %s; every held reading is stored and acknowledged", self.storage)
        self.storage_error = None
        self._ensure_reserve()

    def _kick_retry(self) -> None:
        loop = self._get_loop()
        if self._retry_handle is None:
            self._retry_handle = loop.call_later(RETRY_S, self._retry)

    def _store_checked(self, acc: Accepted) -> None:
        self._check_space()
        self.store.add(acc)

    def _write_or_retry(self, write: Callable[[], object]) -> bool:
        """Run one storage write of the retry pass; on a storage error note it, re-arm the retry, False."""
        try:
            write()
        except Exception as exc:
            if not _is_storage_error(exc):
                raise
            self._storage_failed(exc)
            self._kick_retry()
            return False
        return True

    def _retry(self) -> None:
        self._retry_handle = None
        if self._flush_failing and not self._flush():
            return  # _flush re-armed the retry
        while self._alerts_waiting:
            topic, payload = self._alerts_waiting[0]
            assert self.uplink is not None
            if not self._write_or_retry(functools.partial(self.uplink.enqueue_alert, topic, payload)):
                return
            self._alerts_waiting.pop(0)
        for key, acc in list(self._unstored.items()):
            if not self._write_or_retry(functools.partial(self._store_checked, acc)):
                return
            del self._unstored[key]
            if not isinstance(acc.reading, EcgFrame):
                self._stage(acc)
            for ack in self._unstored_acks.pop(key, []):
                self.when_durable(acc, ack)  # still waits for the outboxes if they are behind
        if self.storage_error is not None:
            try:
                self._check_space()
            except OSError:
                self._kick_retry()  # nothing held, but still nearly full: keep watching
                return
            self._storage_recovered()

    def _reserve_path(self) -> Path:
        return self.storage / RESERVE_FILE

    def _ensure_reserve(self) -> None:
        if self._reserve_bytes <= 0:
            return
        p = self._reserve_path()
        try:
            if p.exists() and p.stat().st_size >= self._reserve_bytes:
                return
            with open(p, "wb") as f:
                f.write(b"\0" * self._reserve_bytes)  # real blocks, not a sparse file
                f.flush()
        except OSError as exc:
            try:
                p.unlink(missing_ok=True)
            except OSError:
                pass
            log.warning("could not create the storage reserve %s: %s", p, exc)

    def _release_reserve(self) -> bool:
        try:
            self._reserve_path().unlink()
            return True
        except OSError:
            return False

    # ------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """The uplink connection and drain, and the TSDB writer, until `stop`."""
        self._get_loop()
        tasks = [asyncio.create_task(self._watch_space(stop), name="storage-space")]
        if self.uplink is not None:
            tasks.append(asyncio.create_task(self.uplink.run(stop), name="uplink"))
        if self.tsdb is not None:
            tasks.append(asyncio.create_task(self.tsdb.run(stop), name="tsdb"))
        await asyncio.gather(*tasks)

    async def _watch_space(self, stop: asyncio.Event) -> None:
        """Notice a nearly full disk even when no reading comes in (alerts from timers need the room)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), SPACE_CHECK_S)
            except TimeoutError:
                pass
            try:
                self._check_space()
            except OSError as exc:
                self._storage_failed(exc)
                self._kick_retry()

    async def finish(self, timeout_s: float = 5.0) -> None:
        """Shutdown: commit what is staged, give the uplink a bounded time to send what it holds."""
        self.flush_now()
        if self.uplink is not None:
            await self.uplink.finish(timeout_s)

    def status(self) -> dict:
        out: dict = {
            "storage": {
                "ok": self.storage_error is None,
                "error": self.storage_error,
                "errors": self.storage_errors,
                "held_unstored": len(self._unstored),
            }
        }
        if self.uplink is not None:
            out["uplink"] = self.uplink.counts()
        if self.tsdb is not None:
            out["tsdb"] = self.tsdb.counts()
        return out

    def close(self) -> None:
        if self.uplink is not None:
            self.uplink.close()
        if self.tsdb is not None:
            self.tsdb.close()


def no_ack() -> None:
    """The `ack` of a message that needs none (tests, callers without manual acks)."""
