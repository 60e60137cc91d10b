"""Durable alert state: every alert, every transition and every pending delivery in SQLite.

A transition is committed (alert row + audit row + outbox rows, one
transaction) before anything is sent, so a crash between the decision and the
publish resends on restart instead of losing the alert. Escalation due times
live in the alert row, so a restart keeps them. Separate file from the
reading store: alert writes never wait behind telemetry.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from stream.models import Alert, AlertState, Condition, Tier, iso
from stream.store import open_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    condition TEXT NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL,
    escalate_at TEXT,
    escalate_to TEXT,
    condition_cleared INTEGER NOT NULL DEFAULT 0,
    tiers_notified TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts(patient_id, condition, state);
CREATE INDEX IF NOT EXISTS alerts_due ON alerts(escalate_at);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    at TEXT NOT NULL,
    what TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    topic_tier TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(delivered_at);
"""


class StoredAlert:
    """An alert plus the dispatcher's bookkeeping."""

    def __init__(self, alert: Alert, escalate_at: datetime | None, escalate_to: Tier | None,
                 condition_cleared: bool, tiers_notified: list[Tier]) -> None:
        self.alert = alert
        self.escalate_at = escalate_at
        self.escalate_to = escalate_to
        self.condition_cleared = condition_cleared
        self.tiers_notified = tiers_notified


class AlertStore:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "alerts.db"
        self._db = open_sqlite(self.path)
        self._db.executescript(_SCHEMA)

    def _row(self, row: tuple) -> StoredAlert:
        body, esc_at, esc_to, cleared, tiers = row
        return StoredAlert(
            Alert.model_validate_json(body),
            datetime.fromisoformat(esc_at) if esc_at else None,
            Tier(esc_to) if esc_to else None,
            bool(cleared),
            [Tier(t) for t in json.loads(tiers)],
        )

    _COLS = "body, escalate_at, escalate_to, condition_cleared, tiers_notified"

    def open_alert(self, patient_id: str, condition: Condition) -> StoredAlert | None:
        """The one active (not resolved) alert for (patient, condition), if any."""
        row = self._db.execute(
            f"SELECT {self._COLS} FROM alerts WHERE patient_id=? AND condition=? AND state!=? LIMIT 1",
            (patient_id, condition.value, AlertState.RESOLVED.value),
        ).fetchone()
        return self._row(row) if row else None

    def get(self, alert_id: str) -> StoredAlert | None:
        row = self._db.execute(f"SELECT {self._COLS} FROM alerts WHERE alert_id=?", (alert_id,)).fetchone()
        return self._row(row) if row else None

    def due(self, now: datetime) -> list[StoredAlert]:
        rows = self._db.execute(
            f"SELECT {self._COLS} FROM alerts WHERE escalate_at IS NOT NULL AND state=? ORDER BY escalate_at",
            (AlertState.FIRING.value,),
        ).fetchall()
        # Compare as datetimes: stored strings may carry different offsets.
        return [s for s in map(self._row, rows) if s.escalate_at is not None and s.escalate_at <= now]

    def active(self) -> list[StoredAlert]:
        rows = self._db.execute(
            f"SELECT {self._COLS} FROM alerts WHERE state!=?", (AlertState.RESOLVED.value,)
        ).fetchall()
        return [self._row(r) for r in rows]

    def save(self, s: StoredAlert, what: str, detail: dict, publish_to: list[Tier]) -> list[tuple[int, Tier, str]]:
        """Commit the alert, an audit row and one outbox row per tier topic; return the outbox rows."""
        a = s.alert
        payload = json.dumps(a.to_public(), ensure_ascii=False)
        out: list[tuple[int, Tier, str]] = []
        with self._db:  # one transaction
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO alerts VALUES (?,?,?,?,?,?,?,?,?)",
                (a.alert_id, a.patient_id, a.condition.value, a.state.value, a.model_dump_json(),
                 iso(s.escalate_at) if s.escalate_at else None, s.escalate_to.value if s.escalate_to else None,
                 int(s.condition_cleared), json.dumps([t.value for t in s.tiers_notified])),
            )
            self._db.execute(
                "INSERT INTO transitions(alert_id, at, what, detail) VALUES (?,?,?,?)",
                (a.alert_id, iso(a.updated_at), what, json.dumps(detail, ensure_ascii=False, default=str)),
            )
            for tier in publish_to:
                cur = self._db.execute(
                    "INSERT INTO outbox(alert_id, topic_tier, payload, created_at) VALUES (?,?,?,?)",
                    (a.alert_id, tier.value, payload, iso(a.updated_at)),
                )
                out.append((int(cur.lastrowid or 0), tier, payload))
            self._db.execute("COMMIT")
        return out

    def pending(self) -> list[tuple[int, Tier, str]]:
        rows = self._db.execute(
            "SELECT id, topic_tier, payload FROM outbox WHERE delivered_at IS NULL ORDER BY id"
        ).fetchall()
        return [(i, Tier(t), p) for i, t, p in rows]

    def delivered(self, outbox_id: int, at: datetime) -> None:
        self._db.execute("UPDATE outbox SET delivered_at=? WHERE id=?", (iso(at), outbox_id))

    def transitions(self, alert_id: str | None = None) -> list[dict]:
        q = "SELECT alert_id, at, what, detail FROM transitions"
        rows = self._db.execute(q + (" WHERE alert_id=?" if alert_id else "") + " ORDER BY id",
                                (alert_id,) if alert_id else ())
        return [{"alert_id": a, "at": t, "what": w, "detail": json.loads(d)} for a, t, w, d in rows]

    def close(self) -> None:
        self._db.close()
