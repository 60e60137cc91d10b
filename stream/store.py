"""The embedded reading store: SQLite in WAL mode under `storage.path`.

Readings are keyed by their idempotency key, so a redelivered reading is a
no-op insert (and reported as a duplicate). ECG frames are stored as
compressed int32 µV blobs, one row per frame: one point per sample would cost
far more than the ingest itself (docs/spec/machine-limits.md).
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from pathlib import Path

import numpy as np

from stream.models import Accepted, EcgFrame, iso

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    idempotency_key TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    device_ts TEXT NOT NULL,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_patient_ts ON readings(patient_id, device_ts);
CREATE TABLE IF NOT EXISTS ecg_frames (
    idempotency_key TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    device_ts TEXT NOT NULL,
    received_at TEXT NOT NULL,
    seq INTEGER,
    fs REAL NOT NULL,
    lead_off INTEGER NOT NULL,
    n_samples INTEGER NOT NULL,
    samples_uv BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ecg_patient_ts ON ecg_frames(patient_id, device_ts);
"""


def open_sqlite(path: Path, durable: bool = False) -> sqlite3.Connection:
    """A WAL-mode SQLite connection.  ``durable``: every commit is fsynced (``synchronous=FULL``).

    NORMAL in WAL mode survives a process crash, but a power cut can roll back the last commits
    (the WAL is synced only at checkpoints).  Readings, alerts and the uplink outbox are durable:
    their commit is what lets the gateway acknowledge the broker, which then forgets the message.
    One commit per event-loop tick, so FULL costs one fsync per tick (``bench/sqlite_sync.py``).
    """
    # health data: the storage directory is the service's own (0700) and each file 0600; SQLite
    # creates the -wal and -shm files with the database file's mode
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    elif path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class ReadingStore:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "readings.db"
        self._db = open_sqlite(self.path, durable=True)
        self._db.executescript(_SCHEMA)

    def add(self, acc: Accepted) -> bool:
        """Store a reading; False if its idempotency key was already stored (a duplicate)."""
        r = acc.reading
        if isinstance(r, EcgFrame):
            blob = zlib.compress(np.asarray(np.round(r.samples_uv), dtype="<i4").tobytes(), 1)
            cur = self._db.execute(
                "INSERT OR IGNORE INTO ecg_frames VALUES (?,?,?,?,?,?,?,?,?,?)",
                (acc.idempotency_key, acc.patient_id, acc.device_id, iso(r.ts), iso(acc.received_at), r.seq,
                 r.fs, int(r.lead_off), len(r.samples_uv), blob),
            )
        else:
            body, text = acc.public_parts()  # its ts and received_at are iso() of the same times
            cur = self._db.execute(
                "INSERT OR IGNORE INTO readings VALUES (?,?,?,?,?,?,?,?)",
                (acc.idempotency_key, acc.patient_id, acc.device_id, r.kind, body["ts"], body["received_at"],
                 acc.source, text),
            )
        return cur.rowcount == 1

    def readings(self, patient_id: str | None = None, kind: str | None = None) -> list[dict]:
        q, args = "SELECT body FROM readings WHERE 1=1", []
        if patient_id:
            q, args = q + " AND patient_id=?", [*args, patient_id]
        if kind:
            q, args = q + " AND kind=?", [*args, kind]
        return [json.loads(b) for (b,) in self._db.execute(q + " ORDER BY device_ts", args)]

    def ecg_samples(self, patient_id: str) -> list[tuple[str, float, np.ndarray]]:
        rows = self._db.execute(
            "SELECT device_ts, fs, samples_uv FROM ecg_frames WHERE patient_id=? ORDER BY device_ts", (patient_id,)
        )
        return [(ts, fs, np.frombuffer(zlib.decompress(b), dtype="<i4")) for ts, fs, b in rows]

    def counts(self) -> dict[str, int]:
        n = self._db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        e = self._db.execute("SELECT COUNT(*) FROM ecg_frames").fetchone()[0]
        return {"readings": n, "ecg_frames": e}

    def close(self) -> None:
        self._db.close()
