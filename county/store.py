"""The county's own store: one SQLite file (`storage.path/county.db`) shared by every county process.

It owns its tables; the API and the page ask it, nobody else writes SQL against them.

* ``readings``: one row per measurement. The unique key is clinic + device + kind + device time +
  seq (county/uplinked.py), so a reading delivered again -- redelivered by the log after a process
  died before acknowledging, resent by a gateway after a lost acknowledgement, or arriving once
  through MQTT and once natively -- is stored once.
* ``alert_events``: every transition of every alert as the clinic sent it (its whole history),
  unique on alert + tier + state + time; ``alerts``: each alert's latest state.
* ``clinics``: each clinic's latest status (the retained one, or the broker's last will) in log order.
* ``county_acks``: acknowledgements sent down from the county (who, when).
* ``patient_villages``: each patient's village as the clinic's status last listed it (the gateway's
  ``patients[].labels.village``; pseudonymous ids only). Kept when a later status no longer lists
  the patient, so past readings stay counted in their village.

WAL and ``synchronous=FULL``: a batch is acknowledged to the log only after its transaction is on
disk, so a power cut cannot lose what the log has forgotten. Several processes write the same
file; SQLite serialises their transactions (``BEGIN IMMEDIATE``, a busy timeout).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from county.uplinked import AlertIn, ReadingIn, StatusIn

DB_FILE = "county.db"
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    clinic TEXT NOT NULL, patient_id TEXT NOT NULL, device_id TEXT NOT NULL, kind TEXT NOT NULL,
    ts TEXT NOT NULL, ts_epoch REAL NOT NULL, seq INTEGER,
    msg_id TEXT, body TEXT NOT NULL, log_seq INTEGER, stored_at REAL NOT NULL, stored_by TEXT
);
CREATE INDEX IF NOT EXISTS readings_patient ON readings (clinic, patient_id, ts_epoch);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    alert_id TEXT NOT NULL, clinic TEXT NOT NULL, tier TEXT NOT NULL, state TEXT NOT NULL,
    updated_at TEXT NOT NULL, updated_epoch REAL NOT NULL, acknowledged_by TEXT,
    body TEXT NOT NULL, log_seq INTEGER, stored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert_id, updated_epoch);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    clinic TEXT NOT NULL, patient_id TEXT NOT NULL, tier TEXT NOT NULL, condition TEXT NOT NULL,
    severity TEXT NOT NULL, state TEXT NOT NULL, opened_at TEXT NOT NULL, opened_epoch REAL NOT NULL,
    updated_at TEXT NOT NULL, updated_epoch REAL NOT NULL, acknowledged_by TEXT, escalated_from TEXT,
    body TEXT NOT NULL, log_seq INTEGER NOT NULL, first_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_clinic ON alerts (clinic, state);
CREATE TABLE IF NOT EXISTS clinics (
    clinic TEXT PRIMARY KEY,
    online INTEGER NOT NULL, will INTEGER NOT NULL, status TEXT NOT NULL,
    received_at REAL NOT NULL, log_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS county_acks (
    id INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL, clinic TEXT NOT NULL, by TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS patient_villages (
    clinic TEXT NOT NULL, patient_id TEXT NOT NULL, village TEXT NOT NULL,
    log_seq INTEGER NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (clinic, patient_id)
);
-- The weekly figures read BP readings and screening strips by device time. Partial, so the other
-- kinds (most of what is stored) pay nothing for them on insert.
CREATE INDEX IF NOT EXISTS readings_bp_time ON readings (ts_epoch) WHERE kind = 'blood_pressure';
CREATE INDEX IF NOT EXISTS readings_strip_time ON readings (ts_epoch) WHERE kind = 'ecg_strip';
"""

# `state=active` as the clinic's own API means it: not resolved yet.
ACTIVE_STATES = ("firing", "acknowledged")
TIER_ORDER = {"emergency": 0, "county": 1, "township": 2, "village": 3}


def open_sqlite(path: Path) -> sqlite3.Connection:
    """WAL, synchronous=FULL; health data, so the directory is 0700 and the file 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.row_factory = sqlite3.Row
    return conn


class CountyStore:
    def __init__(self, directory: Path, process: str = "") -> None:
        self.path = Path(directory) / DB_FILE
        self.process = process
        self._db = open_sqlite(self.path)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
        finally:
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    # ------------------------------------------------------------ writing (one transaction per batch)

    def store_batch(
        self, items: Iterable[tuple[ReadingIn | AlertIn | StatusIn, str | None, int]], now: float | None = None
    ) -> dict[str, int]:
        """Store a fetched batch atomically: (item, msg_id, log_seq) each. Returns counts (new / duplicate)."""
        now = time.time() if now is None else now
        counts = {"readings": 0, "reading_duplicates": 0, "alert_events": 0, "alert_duplicates": 0, "statuses": 0}
        db = self._db
        seen: set[str] = set()
        db.execute("BEGIN IMMEDIATE")
        try:
            for item, msg_id, log_seq in items:
                if item.clinic not in seen:  # a clinic shows on the page from its first message, status or not
                    seen.add(item.clinic)
                    db.execute(
                        "INSERT OR IGNORE INTO clinics (clinic, online, will, status, received_at, log_seq)"
                        " VALUES (?, 0, 0, '{}', ?, -1)",
                        (item.clinic, now),
                    )
                if isinstance(item, ReadingIn):
                    cur = db.execute(
                        "INSERT OR IGNORE INTO readings (key, clinic, patient_id, device_id, kind, ts, ts_epoch, seq,"
                        " msg_id, body, log_seq, stored_at, stored_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            item.key,
                            item.clinic,
                            item.patient_id,
                            item.device_id,
                            item.kind,
                            item.ts,
                            item.ts_epoch,
                            item.seq,
                            msg_id,
                            item.body,
                            log_seq,
                            now,
                            self.process,
                        ),
                    )
                    counts["readings" if cur.rowcount else "reading_duplicates"] += 1
                elif isinstance(item, AlertIn):
                    self._alert(item, log_seq, now, counts)
                elif isinstance(item, StatusIn):
                    db.execute(
                        "INSERT INTO clinics (clinic, online, will, status, received_at, log_seq) VALUES (?,?,?,?,?,?)"
                        " ON CONFLICT (clinic) DO UPDATE SET online=excluded.online, will=excluded.will,"
                        " status=excluded.status, received_at=excluded.received_at, log_seq=excluded.log_seq"
                        " WHERE excluded.log_seq >= clinics.log_seq",
                        (item.clinic, int(item.online), int(item.will), item.body, now, log_seq),
                    )
                    if item.villages:
                        db.executemany(
                            "INSERT INTO patient_villages (clinic, patient_id, village, log_seq, updated_at)"
                            " VALUES (?,?,?,?,?) ON CONFLICT (clinic, patient_id) DO UPDATE SET"
                            " village=excluded.village, log_seq=excluded.log_seq, updated_at=excluded.updated_at"
                            " WHERE excluded.log_seq >= patient_villages.log_seq",
                            [(item.clinic, pid, village, log_seq, now) for pid, village in item.villages],
                        )
                    counts["statuses"] += 1
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return counts

    def _alert(self, a: AlertIn, log_seq: int, now: float, counts: dict[str, int]) -> None:
        db = self._db
        cur = db.execute(
            "INSERT OR IGNORE INTO alert_events (key, alert_id, clinic, tier, state, updated_at, updated_epoch,"
            " acknowledged_by, body, log_seq, stored_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                a.key,
                a.alert_id,
                a.clinic,
                a.tier,
                a.state,
                a.updated_at,
                a.updated_epoch,
                a.acknowledged_by,
                a.body,
                log_seq,
                now,
            ),
        )
        if not cur.rowcount:
            counts["alert_duplicates"] += 1
            return
        counts["alert_events"] += 1
        # The latest transition wins, by the clinic's time, then by place on the log.
        db.execute(
            "INSERT INTO alerts (alert_id, clinic, patient_id, tier, condition, severity, state, opened_at,"
            " opened_epoch, updated_at, updated_epoch, acknowledged_by, escalated_from, body, log_seq, first_seen)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (alert_id) DO UPDATE SET tier=excluded.tier, condition=excluded.condition,"
            " severity=excluded.severity, state=excluded.state, updated_at=excluded.updated_at,"
            " updated_epoch=excluded.updated_epoch, acknowledged_by=excluded.acknowledged_by,"
            " escalated_from=excluded.escalated_from, body=excluded.body, log_seq=excluded.log_seq"
            " WHERE (excluded.updated_epoch, excluded.log_seq) > (alerts.updated_epoch, alerts.log_seq)",
            (
                a.alert_id,
                a.clinic,
                a.patient_id,
                a.tier,
                a.condition,
                a.severity,
                a.state,
                a.opened_at,
                a.opened_epoch,
                a.updated_at,
                a.updated_epoch,
                a.acknowledged_by,
                a.escalated_from,
                a.body,
                log_seq,
                now,
            ),
        )

    def record_county_ack(self, alert_id: str, clinic: str, by: str, at: float | None = None) -> None:
        self._db.execute(
            "INSERT INTO county_acks (alert_id, clinic, by, at) VALUES (?,?,?,?)",
            (alert_id, clinic, by, time.time() if at is None else at),
        )

    # ------------------------------------------------------------ reading

    def clinics(self, offline_after_s: float, now: float | None = None) -> list[dict]:
        now = time.time() if now is None else now
        out = []
        for r in self._db.execute("SELECT * FROM clinics ORDER BY clinic"):
            status = json.loads(r["status"])
            age = now - r["received_at"]
            online = bool(r["online"]) and age <= offline_after_s
            out.append(
                {
                    "clinic": r["clinic"],
                    "online": online,
                    "offline_reason": None
                    if online
                    else (
                        "no_status"
                        if r["log_seq"] < 0
                        else "last_will"
                        if r["will"]
                        else "reported_offline"
                        if not r["online"]
                        else "status_overdue"
                    ),
                    "status_age_s": round(age, 1),
                    "backlog": backlog_of(status),
                    "status": status,
                    "active_alerts": self._active_by_tier(r["clinic"]),
                }
            )
        # Offline clinics first: they are what the county has to chase.
        out.sort(key=lambda c: (c["online"], c["clinic"]))
        return out

    def _active_by_tier(self, clinic: str) -> dict[str, int]:
        counts = {t: 0 for t in TIER_ORDER}
        for r in self._db.execute(
            "SELECT tier, COUNT(*) AS n FROM alerts WHERE clinic=? AND state IN (?,?) GROUP BY tier",
            (clinic, *ACTIVE_STATES),
        ):
            counts[r["tier"]] = r["n"]
        return counts

    def alert(self, alert_id: str) -> dict | None:
        r = self._db.execute("SELECT * FROM alerts WHERE alert_id=?", (alert_id,)).fetchone()
        return None if r is None else self._alert_row(r)

    def alerts(
        self, clinic: str | None = None, active_only: bool = True, patient: str | None = None, limit: int = 500
    ) -> list[dict]:
        sql, args = "SELECT * FROM alerts WHERE 1=1", list[object]()
        if clinic:
            sql += " AND clinic=?"
            args.append(clinic)
        if patient:
            sql += " AND patient_id=?"
            args.append(patient)
        if active_only:
            sql += " AND state IN (?,?)"
            args += list(ACTIVE_STATES)
        # County and emergency first, then the newest.
        sql += (
            " ORDER BY CASE tier WHEN 'emergency' THEN 0 WHEN 'county' THEN 1 WHEN 'township' THEN 2"
            " ELSE 3 END, updated_epoch DESC LIMIT ?"
        )
        args.append(limit)
        return [self._alert_row(r) for r in self._db.execute(sql, args)]

    def _alert_row(self, r: sqlite3.Row) -> dict:
        body = json.loads(r["body"])
        body.update(
            alert_id=r["alert_id"],
            clinic=r["clinic"],
            tier=r["tier"],
            state=r["state"],
            updated_at=r["updated_at"],
            acknowledged_by=r["acknowledged_by"],
        )
        acks = [
            {"by": a["by"], "at": a["at"]}
            for a in self._db.execute("SELECT by, at FROM county_acks WHERE alert_id=? ORDER BY at", (r["alert_id"],))
        ]
        body["county_acks"] = acks
        return body

    def alert_history(self, alert_id: str) -> list[dict]:
        return [
            {
                "tier": e["tier"],
                "state": e["state"],
                "updated_at": e["updated_at"],
                "acknowledged_by": e["acknowledged_by"],
            }
            for e in self._db.execute(
                "SELECT * FROM alert_events WHERE alert_id=? ORDER BY updated_epoch, log_seq", (alert_id,)
            )
        ]

    def readings(
        self, clinic: str | None, patient: str, since_epoch: float | None = None, limit: int = 10_000
    ) -> list[dict]:
        sql, args = "SELECT * FROM readings WHERE patient_id=?", list[object]([patient])
        if clinic:
            sql += " AND clinic=?"
            args.append(clinic)
        if since_epoch is not None:
            sql += " AND ts_epoch >= ?"
            args.append(since_epoch)
        sql += " ORDER BY ts_epoch, device_id, seq LIMIT ?"
        args.append(limit)
        out = []
        for r in self._db.execute(sql, args):
            body = json.loads(r["body"])
            body.update(
                clinic=r["clinic"],
                patient_id=r["patient_id"],
                device_id=r["device_id"],
                kind=r["kind"],
                ts=r["ts"],
                seq=r["seq"],
            )
            out.append(body)
        return out

    def counts(self) -> dict[str, int]:
        q = self._db.execute
        return {
            "readings": q("SELECT COUNT(*) FROM readings").fetchone()[0],
            "alerts": q("SELECT COUNT(*) FROM alerts").fetchone()[0],
            "alert_events": q("SELECT COUNT(*) FROM alert_events").fetchone()[0],
            "clinics": q("SELECT COUNT(*) FROM clinics").fetchone()[0],
        }

    def weekly(self, since_epoch: float) -> dict:
        """The weekly meeting's figures: alerts per tier and clinic, time to acknowledge per tier."""
        per = [
            dict(r)
            for r in self._db.execute(
                "SELECT clinic, tier, COUNT(*) AS alerts FROM alerts WHERE opened_epoch >= ? GROUP BY clinic, tier"
                " ORDER BY clinic, tier",
                (since_epoch,),
            )
        ]
        ack_rows = self._db.execute(
            "SELECT e.tier AS tier, MIN(e.updated_epoch) - a.opened_epoch AS secs FROM alert_events e"
            " JOIN alerts a ON a.alert_id = e.alert_id WHERE e.state='acknowledged' AND a.opened_epoch >= ?"
            " GROUP BY e.alert_id",
            (since_epoch,),
        ).fetchall()
        by_tier: dict[str, list[float]] = {}
        for r in ack_rows:
            by_tier.setdefault(r["tier"], []).append(max(0.0, r["secs"]))
        tta = {}
        for tier, xs in by_tier.items():
            xs.sort()
            tta[tier] = {
                "acknowledged": len(xs),
                "median_s": round(xs[len(xs) // 2], 1),
                "p90_s": round(xs[min(len(xs) - 1, int(0.9 * len(xs)))], 1),
            }
        return {"since": since_epoch, "alerts_by_clinic_tier": per, "time_to_ack_by_tier": tta}

    def home_bp_means(self, since_epoch: float) -> list[tuple[str, str, int, float, float]]:
        """(clinic, patient, n, mean systolic, mean diastolic) in mmHg over each patient's home BP
        readings since then (device time), leaving out the questionable ones (body movement, a loose
        cuff, an improper position: docs/spec/clinical-rules.md, BP readings), as the clinic's rules do.
        (INDEXED BY: with a grouping the planner would rather walk every reading in patient order.)"""
        return [
            (r[0], r[1], r[2], r[3], r[4])
            for r in self._db.execute(
                "SELECT clinic, patient_id, COUNT(*), AVG(json_extract(body, '$.systolic')),"
                " AVG(json_extract(body, '$.diastolic')) FROM readings INDEXED BY readings_bp_time"
                " WHERE kind = 'blood_pressure' AND ts_epoch >= ?"
                " AND json_extract(body, '$.systolic') IS NOT NULL AND json_extract(body, '$.diastolic') IS NOT NULL"
                " AND NOT (IFNULL(json_extract(body, '$.status.body_movement'), 0)"
                " OR IFNULL(json_extract(body, '$.status.cuff_loose'), 0)"
                " OR IFNULL(json_extract(body, '$.status.improper_position'), 0))"
                " GROUP BY clinic, patient_id",
                (since_epoch,),
            )
        ]

    def af_alert_patients(self, since_epoch: float, conditions: tuple[str, ...]) -> set[tuple[str, str]]:
        """(clinic, patient) with an alert of one of these conditions opened since then."""
        marks = ",".join("?" * len(conditions))
        return {
            (r[0], r[1])
            for r in self._db.execute(
                f"SELECT DISTINCT clinic, patient_id FROM alerts WHERE opened_epoch >= ? AND condition IN ({marks})",
                (since_epoch, *conditions),
            )
        }

    def af_strip_patients(self, since_epoch: float) -> set[tuple[str, str]]:
        """(clinic, patient) with a screening strip labelled `af` recorded since then (device time)."""
        return {
            (r[0], r[1])
            for r in self._db.execute(
                "SELECT clinic, patient_id FROM readings INDEXED BY readings_strip_time"
                " WHERE kind = 'ecg_strip' AND ts_epoch >= ?"
                " AND json_extract(body, '$.label') = 'af'",
                (since_epoch,),
            )
        }

    def patient_villages(self) -> dict[tuple[str, str], str]:
        """(clinic, patient) -> village, as the clinics' statuses last listed them."""
        return {
            (r[0], r[1]): r[2] for r in self._db.execute("SELECT clinic, patient_id, village FROM patient_villages")
        }

    def close(self) -> None:
        self._db.close()


def backlog_of(status: dict) -> dict | None:
    """The backlog as the gateway reported it: what waits for the county in its uplink outbox."""
    up = status.get("uplink")
    if not isinstance(up, dict):
        return None
    pa, pt = up.get("pending_alerts"), up.get("pending_telemetry")
    if pa is None and pt is None:
        return None
    return {"alerts": pa or 0, "telemetry": pt or 0, "connected": up.get("connected")}
