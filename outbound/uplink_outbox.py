"""The uplink's durable outbox: what the county broker has not acknowledged yet, in SQLite (WAL).

One row per message for the county: its MQTT topic and payload, a message id
the county dedupes on, a priority (alerts before telemetry) and a state.

- **Idempotent.** `msg_id` is unique: staging the same reading or the same
  alert transition twice (a redelivery after a crash, a device resending)
  adds nothing. Sent and dropped rows are kept for a while (`retain`) only so
  that a late duplicate is recognised instead of being forwarded again.
- **Bounded.** At most `max_outbox` telemetry rows wait; when one more would
  exceed that, the *oldest pending telemetry* is dropped (marked, counted, and
  reported to the caller so it can raise a technical alert). Alerts are never
  dropped and do not count against the bound: they are few, and losing one is
  the one thing the gateway must not do.
- **Order.** `next_batch` returns every pending alert first, then telemetry,
  each in the order it was staged, so a patient's readings reach the county
  in the order the gateway accepted them.

Writes are batched: `stage` only buffers; `flush` commits everything staged
in one transaction (the gateway flushes once per event-loop tick and
acknowledges readings to the local broker only after that commit).
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from stream.store import open_sqlite

PRIORITY_ALERT = 0
PRIORITY_TELEMETRY = 1

PENDING, SENT, DROPPED = 0, 1, 2

PRUNE_EVERY_ROWS = 5000  # prune sent/dropped rows after this many more have been marked

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL,
    patient_id TEXT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0,
    staged_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, priority, seq);
"""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    msg_id: str
    priority: int
    topic: str
    payload: bytes
    retain: bool


@dataclass
class DropReport:
    """Telemetry dropped by one flush because the outbox was full."""

    dropped: int
    by_patient: Counter[str] = field(default_factory=Counter)
    oldest_staged_at: float | None = None


class UplinkOutbox:
    def __init__(self, path: Path, max_outbox: int = 100_000, retain: int | None = None) -> None:
        self.path = Path(path)
        self.max_outbox = max_outbox
        self.retain = retain if retain is not None else min(max_outbox, 100_000)
        self._db = open_sqlite(self.path, durable=True)
        self._db.executescript(_SCHEMA)
        self._staged: list[tuple] = []
        self.pending_alerts, self.pending_telemetry = self._count_pending()
        self.dropped_total = 0
        self.sent_total = 0
        self._marked_since_prune = 0

    def _count_pending(self) -> tuple[int, int]:
        rows = dict(
            self._db.execute(
                "SELECT priority, COUNT(*) FROM outbox WHERE state=? GROUP BY priority", (PENDING,)
            ).fetchall()
        )
        return rows.get(PRIORITY_ALERT, 0), rows.get(PRIORITY_TELEMETRY, 0)

    # ------------------------------------------------------------ staging

    def stage(
        self,
        msg_id: str,
        priority: int,
        topic: str,
        payload: str | bytes,
        patient_id: str | None = None,
        retain: bool = False,
    ) -> None:
        """Buffer one message; nothing is durable until `flush`."""
        body = payload.encode() if isinstance(payload, str) else payload
        self._staged.append((msg_id, priority, patient_id, topic, body, int(retain), time.time()))

    @property
    def has_staged(self) -> bool:
        return bool(self._staged)

    def flush(self) -> DropReport | None:
        """Commit what is staged (one transaction); enforce the bound.

        Raises sqlite3.Error if the commit fails (disk full...): the staged
        rows are kept and the next flush tries again.
        """
        if not self._staged:
            return None
        rows = self._staged
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO outbox(msg_id, priority, patient_id, topic, payload, retain, staged_at) "
                "VALUES (?,?,?,?,?,?,?)",
                rows,
            )
            inserted = db.total_changes - before
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._staged = []
        if inserted == len(rows):  # the usual case: nothing was a duplicate
            n_alert = sum(1 for r in rows if r[1] == PRIORITY_ALERT)
            self.pending_alerts += n_alert
            self.pending_telemetry += inserted - n_alert
        else:
            self.pending_alerts, self.pending_telemetry = self._count_pending()
        return self._enforce_bound()

    def _enforce_bound(self) -> DropReport | None:
        excess = self.pending_telemetry - self.max_outbox
        if excess <= 0:
            return None
        db = self._db
        with db:
            db.execute("BEGIN IMMEDIATE")
            victims = db.execute(
                "SELECT seq, patient_id, staged_at FROM outbox WHERE state=? AND priority=? ORDER BY seq LIMIT ?",
                (PENDING, PRIORITY_TELEMETRY, excess),
            ).fetchall()
            db.executemany("UPDATE outbox SET state=? WHERE seq=?", [(DROPPED, s) for s, _, _ in victims])
        report = DropReport(
            dropped=len(victims),
            by_patient=Counter(p or "-" for _, p, _ in victims),
            oldest_staged_at=victims[0][2] if victims else None,
        )
        self.pending_telemetry -= len(victims)
        self.dropped_total += len(victims)
        self._marked_since_prune += len(victims)
        return report

    # ------------------------------------------------------------ draining

    def next_batch(self, limit: int) -> list[OutboxRow]:
        """Pending rows in send order: alerts first, then telemetry, each oldest first."""
        rows = self._db.execute(
            "SELECT seq, msg_id, priority, topic, payload, retain FROM outbox WHERE state=? "
            "ORDER BY priority, seq LIMIT ?",
            (PENDING, limit),
        ).fetchall()
        return [OutboxRow(s, m, p, t, bytes(b), bool(r)) for s, m, p, t, b, r in rows]

    def next_alerts(self, limit: int) -> list[OutboxRow]:
        """Pending alert rows, oldest first."""
        rows = self._db.execute(
            "SELECT seq, msg_id, priority, topic, payload, retain FROM outbox WHERE state=? AND priority=? "
            "ORDER BY seq LIMIT ?",
            (PENDING, PRIORITY_ALERT, limit),
        ).fetchall()
        return [OutboxRow(s, m, p, t, bytes(b), bool(r)) for s, m, p, t, b, r in rows]

    def mark_sent(self, rows: list[OutboxRow]) -> None:
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE outbox SET state=? WHERE seq=? AND state=?", [(SENT, r.seq, PENDING) for r in rows]
            )
        n_alert = sum(1 for r in rows if r.priority == PRIORITY_ALERT)
        self.pending_alerts = max(0, self.pending_alerts - n_alert)
        self.pending_telemetry = max(0, self.pending_telemetry - (len(rows) - n_alert))
        self.sent_total += len(rows)
        self._marked_since_prune += len(rows)
        if self._marked_since_prune >= PRUNE_EVERY_ROWS:
            self.prune()

    def prune(self) -> int:
        """Forget sent/dropped rows beyond the newest `retain` of them."""
        self._marked_since_prune = 0
        cutoff = self._db.execute(
            "SELECT seq FROM outbox WHERE state!=? ORDER BY seq DESC LIMIT 1 OFFSET ?", (PENDING, self.retain)
        ).fetchone()
        if cutoff is None:
            return 0
        cur = self._db.execute("DELETE FROM outbox WHERE state!=? AND seq<=?", (PENDING, cutoff[0]))
        return cur.rowcount

    # ------------------------------------------------------------ inspection

    @property
    def pending(self) -> int:
        return self.pending_alerts + self.pending_telemetry

    def counts(self) -> dict[str, int]:
        return {
            "pending_alerts": self.pending_alerts,
            "pending_telemetry": self.pending_telemetry,
            "sent": self.sent_total,
            "dropped": self.dropped_total,
            "max_outbox": self.max_outbox,
        }

    def close(self) -> None:
        self._db.close()
