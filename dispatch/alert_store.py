"""Durable alert state: every alert, every transition and every pending delivery in SQLite.

A transition is committed (alert row + audit row + MQTT outbox rows + channel
notification rows, one transaction) before anything is sent, so a crash
between the decision and the publish resends on restart instead of losing the
alert. Escalation and repeat due times, snoozes and silences live in the
database, so a restart keeps them. Separate file from the reading store:
alert writes never wait behind telemetry.

Tables: `alerts` (one row per alert, its bookkeeping), `transitions` (the
audit trail the alarm-fatigue report reads), `outbox` (MQTT, one row per tier
topic), `silences`, `notes` (channel notifications waiting to be grouped),
`deliveries` (grouped channel deliveries with idempotency key, attempts and
receipt), `channel_groups` (when each group last went out) and
`channel_health` (a failing channel's technical alert).

The store owns these tables: what other rooms read of them (the console, the
reports, the FHIR export, `vitalgate routes test`) is `AlertQueries`, over a
read-only connection that is safe while the gateway runs.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dispatch.channels import ChannelAlert, Delivery
from dispatch.routing import Match
from dispatch.suppression import Silence
from stream.models import Alert, AlertState, Condition, Tier, iso
from stream.store import ReadOnlyDb, open_sqlite

FILE_NAME = "alerts.db"

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
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    group_key TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    not_before TEXT NOT NULL,
    group_interval_s REAL NOT NULL,
    delivery_id INTEGER
);
CREATE INDEX IF NOT EXISTS notes_pending ON notes(delivery_id);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    group_key TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    alert_ids TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    delivered_at TEXT,
    last_error TEXT,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(channel, delivered_at);
CREATE TABLE IF NOT EXISTS channel_groups (
    channel TEXT NOT NULL,
    group_key TEXT NOT NULL,
    last_sent_at TEXT NOT NULL,
    PRIMARY KEY (channel, group_key)
);
CREATE TABLE IF NOT EXISTS channel_health (
    channel TEXT PRIMARY KEY,
    failures_in_row INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    alert TEXT
);
"""

# Columns added after the first release; an existing alerts.db is migrated in place.
_MIGRATIONS = {
    "alerts": [
        ("repeat_at", "TEXT"),
        ("snoozed_until", "TEXT"),
        ("suppressed", "TEXT"),
        ("notify_pending", "INTEGER NOT NULL DEFAULT 0"),
        ("route", "TEXT NOT NULL DEFAULT '{}'"),
    ],
    "transitions": [("patient_id", "TEXT"), ("condition", "TEXT"), ("tier", "TEXT"), ("severity", "TEXT")],
}


def _dt(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


class StoredAlert:
    """An alert plus the dispatcher's bookkeeping."""

    def __init__(
        self,
        alert: Alert,
        escalate_at: datetime | None,
        escalate_to: Tier | None,
        condition_cleared: bool,
        tiers_notified: list[Tier],
        *,
        repeat_at: datetime | None = None,
        snoozed_until: datetime | None = None,
        suppressed: str | None = None,
        notify_pending: bool = False,
        route: dict[str, Any] | None = None,
    ) -> None:
        self.alert = alert
        self.escalate_at = escalate_at
        self.escalate_to = escalate_to
        self.condition_cleared = condition_cleared
        self.tiers_notified = tiers_notified
        self.repeat_at = repeat_at  # next reminder while firing and unacknowledged
        self.snoozed_until = snoozed_until
        self.suppressed = suppressed  # "snooze", "silence:<id>" or "inhibited:<alert_id>"; None = notifying
        self.notify_pending = notify_pending  # tell the tier when the hold ends
        self.route = route or {}

    def to_api(self) -> dict[str, Any]:
        """The public payload plus the bookkeeping the HTTP API shows."""
        return {
            **self.alert.to_public(),
            "escalate_at": iso(self.escalate_at) if self.escalate_at else None,
            "escalate_to": self.escalate_to.value if self.escalate_to else None,
            "repeat_at": iso(self.repeat_at) if self.repeat_at else None,
            "snoozed_until": iso(self.snoozed_until) if self.snoozed_until else None,
            "suppressed": self.suppressed,
            "condition_cleared": self.condition_cleared,
            "tiers_notified": [t.value for t in self.tiers_notified],
            "route": self.route.get("path", []),
        }


@dataclass(frozen=True)
class Note:
    """A channel notification waiting to be grouped into a delivery."""

    channel: str
    group_key: str
    alert_id: str
    event: str
    payload: str
    not_before: datetime
    group_interval_s: float


class AlertStore:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / FILE_NAME
        self._db = open_sqlite(self.path, durable=True)
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        for table, cols in _MIGRATIONS.items():
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for name, decl in cols:
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
        self._db.execute("CREATE INDEX IF NOT EXISTS alerts_repeat ON alerts(repeat_at)")
        self._db.execute("CREATE INDEX IF NOT EXISTS transitions_at ON transitions(at)")

    _COLS = (
        "body, escalate_at, escalate_to, condition_cleared, tiers_notified, repeat_at, snoozed_until, "
        "suppressed, notify_pending, route"
    )

    def _row(self, row: tuple) -> StoredAlert:
        body, esc_at, esc_to, cleared, tiers, rep, snooze, supp, pending, route = row
        return StoredAlert(
            Alert.model_validate_json(body),
            _dt(esc_at),
            Tier(esc_to) if esc_to else None,
            bool(cleared),
            [Tier(t) for t in json.loads(tiers)],
            repeat_at=_dt(rep),
            snoozed_until=_dt(snooze),
            suppressed=supp,
            notify_pending=bool(pending),
            route=json.loads(route or "{}"),
        )

    # ------------------------------------------------------------ alerts

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

    def repeats_due(self, now: datetime) -> list[StoredAlert]:
        rows = self._db.execute(
            f"SELECT {self._COLS} FROM alerts WHERE repeat_at IS NOT NULL AND state=? ORDER BY repeat_at",
            (AlertState.FIRING.value,),
        ).fetchall()
        return [s for s in map(self._row, rows) if s.repeat_at is not None and s.repeat_at <= now]

    def active(self, patient_id: str | None = None) -> list[StoredAlert]:
        q = f"SELECT {self._COLS} FROM alerts WHERE state!=?"
        args: tuple = (AlertState.RESOLVED.value,)
        if patient_id is not None:
            q += " AND patient_id=?"
            args += (patient_id,)
        return [self._row(r) for r in self._db.execute(q, args).fetchall()]

    def list_alerts(
        self, states: list[AlertState] | None = None, patient_id: str | None = None, limit: int = 200
    ) -> list[StoredAlert]:
        q = f"SELECT {self._COLS} FROM alerts WHERE 1=1"
        args: list[Any] = []
        if states:
            q += f" AND state IN ({','.join('?' * len(states))})"
            args += [s.value for s in states]
        if patient_id:
            q += " AND patient_id=?"
            args.append(patient_id)
        q += " ORDER BY rowid DESC LIMIT ?"
        args.append(limit)
        return [self._row(r) for r in self._db.execute(q, args).fetchall()]

    def save(
        self, s: StoredAlert, what: str, detail: dict, publish_to: list[Tier], notes: list[Note] | None = None
    ) -> list[tuple[int, Tier, str]]:
        """Commit the alert, an audit row, one outbox row per tier topic and the channel notes."""
        a = s.alert
        payload = json.dumps(a.to_public(), ensure_ascii=False)
        out: list[tuple[int, Tier, str]] = []
        with self._db:  # one transaction
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO alerts(alert_id, patient_id, condition, state, body, escalate_at, escalate_to,"
                " condition_cleared, tiers_notified, repeat_at, snoozed_until, suppressed, notify_pending, route)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    a.alert_id,
                    a.patient_id,
                    a.condition.value,
                    a.state.value,
                    a.model_dump_json(),
                    iso(s.escalate_at) if s.escalate_at else None,
                    s.escalate_to.value if s.escalate_to else None,
                    int(s.condition_cleared),
                    json.dumps([t.value for t in s.tiers_notified]),
                    iso(s.repeat_at) if s.repeat_at else None,
                    iso(s.snoozed_until) if s.snoozed_until else None,
                    s.suppressed,
                    int(s.notify_pending),
                    json.dumps(s.route),
                ),
            )
            self._db.execute(
                "INSERT INTO transitions(alert_id, at, what, detail, patient_id, condition, tier, severity)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    a.alert_id,
                    iso(a.updated_at),
                    what,
                    json.dumps(detail, ensure_ascii=False, default=str),
                    a.patient_id,
                    a.condition.value,
                    a.tier.value,
                    a.severity.value,
                ),
            )
            for tier in publish_to:
                cur = self._db.execute(
                    "INSERT INTO outbox(alert_id, topic_tier, payload, created_at) VALUES (?,?,?,?)",
                    (a.alert_id, tier.value, payload, iso(a.updated_at)),
                )
                out.append((int(cur.lastrowid or 0), tier, payload))
            for n in notes or []:
                self._db.execute(
                    "INSERT INTO notes(channel, group_key, alert_id, event, payload, created_at, not_before,"
                    " group_interval_s) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        n.channel,
                        n.group_key,
                        n.alert_id,
                        n.event,
                        n.payload,
                        iso(a.updated_at),
                        iso(n.not_before),
                        n.group_interval_s,
                    ),
                )
            self._db.execute("COMMIT")
        return out

    def enqueue(self, alert_id: str, publish_to: list[Tier], payload: str, at: datetime) -> None:
        """Outbox rows for a message that is not an Alert row (a channel's technical alert)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for tier in publish_to:
                self._db.execute(
                    "INSERT INTO outbox(alert_id, topic_tier, payload, created_at) VALUES (?,?,?,?)",
                    (alert_id, tier.value, payload, iso(at)),
                )
            self._db.execute("COMMIT")

    def pending(self) -> list[tuple[int, Tier, str]]:
        rows = self._db.execute(
            "SELECT id, topic_tier, payload FROM outbox WHERE delivered_at IS NULL ORDER BY id"
        ).fetchall()
        return [(i, Tier(t), p) for i, t, p in rows]

    def delivered(self, outbox_id: int, at: datetime) -> None:
        self._db.execute("UPDATE outbox SET delivered_at=? WHERE id=?", (iso(at), outbox_id))

    def transitions(self, alert_id: str | None = None) -> list[dict]:
        q = "SELECT alert_id, at, what, detail FROM transitions"
        rows = self._db.execute(
            q + (" WHERE alert_id=?" if alert_id else "") + " ORDER BY id", (alert_id,) if alert_id else ()
        )
        return [{"alert_id": a, "at": t, "what": w, "detail": json.loads(d)} for a, t, w, d in rows]

    # ------------------------------------------------------------ silences

    def put_silence(self, s: Silence) -> None:
        body = {
            "match": s.match.model_dump(mode="json", exclude_none=True),
            "starts_at": iso(s.starts_at),
            "ends_at": iso(s.ends_at) if s.ends_at else None,
            "created_by": s.created_by,
            "created_at": iso(s.created_at),
            "why": s.why,
            "include_critical": s.include_critical,
            "source": s.source,
            "expired_by": s.expired_by,
            "expired_at": iso(s.expired_at) if s.expired_at else None,
        }
        self._db.execute(
            "INSERT OR REPLACE INTO silences(id, body, created_at) VALUES (?,?,?)",
            (s.id, json.dumps(body, ensure_ascii=False), iso(s.created_at)),
        )

    def silences(self) -> list[Silence]:
        return _silences(self._db.execute(_SILENCES).fetchall())

    # ------------------------------------------------------------ channels

    def pending_notes(self) -> list[tuple[int, str, str, str, str, datetime, datetime, float]]:
        rows = self._db.execute(
            "SELECT id, channel, group_key, event, payload, created_at, not_before, group_interval_s FROM notes"
            " WHERE delivery_id IS NULL ORDER BY id"
        ).fetchall()
        return [
            (i, c, g, e, p, datetime.fromisoformat(ca), datetime.fromisoformat(nb), gi)
            for i, c, g, e, p, ca, nb, gi in rows
        ]

    def group_last_sent(self, channel: str, group_key: str) -> datetime | None:
        row = self._db.execute(
            "SELECT last_sent_at FROM channel_groups WHERE channel=? AND group_key=?", (channel, group_key)
        ).fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    def make_delivery(
        self, channel: str, group_key: str, note_ids: list[int], alert_ids: list[str], body: dict, now: datetime
    ) -> int:
        """Turn grouped notes into one delivery row (idempotency key fixed here, kept across retries)."""
        key = uuid.uuid4().hex
        body = {**body, "idempotency_key": key}
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute(
                "INSERT INTO deliveries(channel, group_key, idempotency_key, alert_ids, body, created_at,"
                " next_attempt_at) VALUES (?,?,?,?,?,?,?)",
                (
                    channel,
                    group_key,
                    key,
                    json.dumps(alert_ids),
                    json.dumps(body, ensure_ascii=False),
                    iso(now),
                    iso(now),
                ),
            )
            did = int(cur.lastrowid or 0)
            self._db.executemany("UPDATE notes SET delivery_id=? WHERE id=?", [(did, i) for i in note_ids])
            self._db.execute(
                "INSERT OR REPLACE INTO channel_groups(channel, group_key, last_sent_at) VALUES (?,?,?)",
                (channel, group_key, iso(now)),
            )
            self._db.execute("COMMIT")
        return did

    def next_delivery(self, channel: str) -> tuple[Delivery, datetime] | None:
        """The oldest undelivered delivery of a channel (in order: a receiver sees them as they happened)."""
        row = self._db.execute(
            "SELECT id, idempotency_key, body, attempts, next_attempt_at FROM deliveries"
            " WHERE channel=? AND delivered_at IS NULL ORDER BY id LIMIT 1",
            (channel,),
        ).fetchone()
        if row is None:
            return None
        i, key, body, attempts, nxt = row
        return Delivery(i, channel, key, body, attempts), datetime.fromisoformat(nxt)

    def delivery_succeeded(self, delivery_id: int, at: datetime, receipt: str) -> None:
        self._db.execute(
            "UPDATE deliveries SET attempts=attempts+1, delivered_at=?, receipt=?, last_error=NULL WHERE id=?",
            (iso(at), receipt, delivery_id),
        )

    def delivery_failed(self, delivery_id: int, error: str, next_attempt_at: datetime) -> None:
        self._db.execute(
            "UPDATE deliveries SET attempts=attempts+1, last_error=?, next_attempt_at=? WHERE id=?",
            (error[:500], iso(next_attempt_at), delivery_id),
        )

    def deliveries(self, channel: str | None = None, limit: int = 200) -> list[dict]:
        q = (
            "SELECT id, channel, group_key, idempotency_key, alert_ids, created_at, attempts, next_attempt_at,"
            " delivered_at, last_error, receipt FROM deliveries"
        )
        args: tuple = ()
        if channel:
            q += " WHERE channel=?"
            args = (channel,)
        rows = self._db.execute(q + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        keys = (
            "id",
            "channel",
            "group_key",
            "idempotency_key",
            "alert_ids",
            "created_at",
            "attempts",
            "next_attempt_at",
            "delivered_at",
            "last_error",
            "receipt",
        )
        out = [dict(zip(keys, r)) for r in rows]
        for d in out:
            d["alert_ids"] = json.loads(d["alert_ids"])
        return out

    def pending_deliveries(self, channel: str) -> int:
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE channel=? AND delivered_at IS NULL", (channel,)
            ).fetchone()[0]
        )

    def channel_health(self, channel: str) -> tuple[int, str | None, ChannelAlert | None]:
        row = self._db.execute(
            "SELECT failures_in_row, last_error, alert FROM channel_health WHERE channel=?", (channel,)
        ).fetchone()
        if row is None:
            return 0, None, None
        return int(row[0]), row[1], ChannelAlert.from_public(json.loads(row[2])) if row[2] else None

    def set_channel_health(
        self, channel: str, failures_in_row: int, last_error: str | None, alert: ChannelAlert | None
    ) -> None:
        body = json.dumps(alert.to_public(), ensure_ascii=False) if alert else None
        self._db.execute(
            "INSERT OR REPLACE INTO channel_health(channel, failures_in_row, last_error, alert) VALUES (?,?,?,?)",
            (channel, failures_in_row, last_error, body),
        )

    def channel_alert(self, alert_id: str) -> tuple[str, ChannelAlert] | None:
        for channel, alert in self._db.execute("SELECT channel, alert FROM channel_health WHERE alert IS NOT NULL"):
            body = json.loads(alert)
            if body.get("alert_id") == alert_id:
                return channel, ChannelAlert.from_public(body)
        return None

    def close(self) -> None:
        self._db.close()


_SILENCES = "SELECT id, body FROM silences ORDER BY created_at, id"


def _silences(rows: list[tuple]) -> list[Silence]:
    out = []
    for sid, body in rows:
        b = json.loads(body)
        out.append(
            Silence(
                id=sid,
                match=Match.model_validate(b["match"]),
                starts_at=datetime.fromisoformat(b["starts_at"]),
                ends_at=_dt(b["ends_at"]),
                created_by=b["created_by"],
                created_at=datetime.fromisoformat(b["created_at"]),
                why=b["why"],
                include_critical=b["include_critical"],
                source=b["source"],
                expired_by=b.get("expired_by"),
                expired_at=_dt(b.get("expired_at")),
            )
        )
    return out


class AlertQueries:
    """The alert store's queries for other rooms, read-only over `alerts.db` (module docstring)."""

    def __init__(self, path: Path) -> None:
        self._db = ReadOnlyDb(path)

    def close(self) -> None:
        self._db.close()

    def silences(self) -> list[Silence]:
        return _silences(self._db.rows(_SILENCES))

    def with_transitions(self, patient_id: str | None = None, since: datetime | None = None) -> list[dict]:
        """Alerts (public payload) that were open at some time after `since`, oldest first, each with
        its `transitions` ({at, what, tier, detail})."""
        q, args = "SELECT alert_id, body FROM alerts WHERE 1=1", list[object]()
        if patient_id:
            q, args = q + " AND patient_id=?", [*args, patient_id]
        alerts = {}
        for aid, body in self._db.rows(q, args):
            alerts[aid] = json.loads(body)
        if not alerts:
            return []
        trans: dict[str, list[dict]] = {a: [] for a in alerts}
        has_tier = any(r[1] == "tier" for r in self._db.rows("PRAGMA table_info(transitions)"))
        cols = "alert_id, at, what, detail" + (", tier" if has_tier else "")
        q2, args2 = f"SELECT {cols} FROM transitions", []
        if patient_id and has_tier:
            q2, args2 = (
                q2 + " WHERE patient_id=? OR alert_id IN (SELECT alert_id FROM alerts WHERE patient_id=?)",
                [patient_id, patient_id],
            )
        for row in self._db.rows(q2 + " ORDER BY id", args2):
            if row[0] in trans:
                trans[row[0]].append(
                    {"at": row[1], "what": row[2], "detail": json.loads(row[3]), "tier": row[4] if has_tier else None}
                )
        out = []
        for aid, a in alerts.items():
            a["transitions"] = trans[aid]
            last = trans[aid][-1]["at"] if trans[aid] else a.get("updated_at") or a["opened_at"]
            if since is not None and datetime.fromisoformat(last) < since:
                continue
            out.append(a)
        out.sort(key=lambda a: a["opened_at"])
        return out

    def outbox_messages(self) -> list[tuple[str, str]]:
        """(tier, payload) of every MQTT outbox row, sent or not, in order (what a scenario run published)."""
        return [(t, p) for t, p in self._db.rows("SELECT topic_tier, payload FROM outbox ORDER BY id")]

    def audit_trail(self, since: datetime) -> list[tuple]:
        """Every transition of the alerts that moved since `since`, in order, as (alert_id, at, what, detail
        JSON, patient_id, condition, tier): earlier ones too, so an ack can be timed from its alert's arrival."""
        return self._db.rows(
            "SELECT t.alert_id, t.at, t.what, t.detail, COALESCE(t.patient_id, a.patient_id),"
            " COALESCE(t.condition, a.condition), t.tier FROM transitions t LEFT JOIN alerts a USING(alert_id)"
            " WHERE t.alert_id IN (SELECT alert_id FROM transitions WHERE at >= ?) ORDER BY t.id",
            (iso(since),),
        )

    def channel_totals(self, since: datetime) -> list[tuple[str, int, int, int]]:
        """Per channel, of the deliveries created since `since`: (channel, deliveries, delivered, attempts)."""
        return [
            (c, int(n), int(ok or 0), int(att or 0))
            for c, n, ok, att in self._db.rows(
                "SELECT channel, COUNT(*), SUM(delivered_at IS NOT NULL), SUM(attempts) FROM deliveries"
                " WHERE created_at >= ? GROUP BY channel",
                (iso(since),),
            )
        ]

    def silences_created(self, since: datetime) -> int:
        rows = self._db.rows("SELECT COUNT(*) FROM silences WHERE created_at >= ?", (iso(since),))
        return int(rows[0][0]) if rows else 0
