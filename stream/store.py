"""The embedded reading store: SQLite in WAL mode under `storage.path`.

Readings are keyed by their idempotency key, so a redelivered reading is a
no-op insert (and reported as a duplicate). ECG frames are stored as
compressed int32 µV blobs, one row per frame: one point per sample would cost
far more than the ingest itself (docs/spec/machine-limits.md).

Screening strips (`strips`, docs/ecg-screening.md) are stored with their result: the samples as
compressed int16 µV (a 30-s strip at 300 Hz is about 10 kB), the label, confidence, heart rate,
probabilities and the model's version in columns, and the public payload (the result without the
samples) as `body`. A doctor's "referred" mark is a row of `strip_referrals` (who, when), the
referral list's audit trail.

The store owns its tables (`readings`, `ecg_frames`, `strips`, `strip_referrals`): the queries other rooms
need (the console, reports, FHIR export, rule-state restore) are
`ReadingQueries`, over a read-only connection, so they are safe beside the
running gateway (WAL readers never block the writer) and after it has stopped.
`ReadOnlyDb` is that connection, shared by the other stores' query classes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from stream.models import Accepted, EcgFrame, ScreenedStrip, iso

FILE_NAME = "readings.db"
MAX_STRIP_S = 60.0  # the live strip and evidence windows never read more than this

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
CREATE TABLE IF NOT EXISTS strips (
    idempotency_key TEXT PRIMARY KEY,
    strip_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    device_ts TEXT NOT NULL,
    received_at TEXT NOT NULL,
    fs REAL NOT NULL,
    n_samples INTEGER NOT NULL,
    samples_uv BLOB NOT NULL,
    label TEXT NOT NULL,
    confidence REAL NOT NULL,
    hr_bpm REAL,
    probabilities TEXT NOT NULL,
    model TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS strips_patient_ts ON strips(patient_id, device_ts);
CREATE INDEX IF NOT EXISTS strips_ts ON strips(device_ts);
CREATE TABLE IF NOT EXISTS strip_referrals (
    idempotency_key TEXT PRIMARY KEY,
    referred_at TEXT NOT NULL,
    referred_by TEXT NOT NULL,
    note TEXT NOT NULL
);
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
        self.path = Path(directory) / FILE_NAME
        self._db = open_sqlite(self.path, durable=True)
        self._db.executescript(_SCHEMA)

    def add(self, acc: Accepted) -> bool:
        """Store a reading; False if its idempotency key was already stored (a duplicate)."""
        r = acc.reading
        if isinstance(r, EcgFrame):
            blob = zlib.compress(np.asarray(np.round(r.samples_uv), dtype="<i4").tobytes(), 1)
            cur = self._db.execute(
                "INSERT OR IGNORE INTO ecg_frames VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    acc.idempotency_key,
                    acc.patient_id,
                    acc.device_id,
                    iso(r.ts),
                    iso(acc.received_at),
                    r.seq,
                    r.fs,
                    int(r.lead_off),
                    len(r.samples_uv),
                    blob,
                ),
            )
        elif isinstance(r, ScreenedStrip):
            body, text = acc.public_parts()  # the result without the samples
            blob = zlib.compress(np.asarray(r.samples_uv, dtype="<i2").tobytes(), 6)
            cur = self._db.execute(
                "INSERT OR IGNORE INTO strips VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    acc.idempotency_key,
                    r.strip_id,
                    acc.patient_id,
                    acc.device_id,
                    body["ts"],
                    body["received_at"],
                    r.fs,
                    len(r.samples_uv),
                    blob,
                    r.label,
                    r.confidence,
                    r.hr_bpm,
                    json.dumps(r.probabilities),
                    r.model,
                    text,
                ),
            )
        elif r.kind == "ecg_strip":
            raise TypeError("a strip is stored with its screening (stream/strip_screening.py), not before")
        else:
            body, text = acc.public_parts()  # its ts and received_at are iso() of the same times
            cur = self._db.execute(
                "INSERT OR IGNORE INTO readings VALUES (?,?,?,?,?,?,?,?)",
                (
                    acc.idempotency_key,
                    acc.patient_id,
                    acc.device_id,
                    r.kind,
                    body["ts"],
                    body["received_at"],
                    acc.source,
                    text,
                ),
            )
        return cur.rowcount == 1

    def readings(self, patient_id: str | None = None, kind: str | None = None) -> list[dict]:
        q, args = "SELECT body FROM readings WHERE 1=1", list[object]()
        if patient_id:
            q, args = q + " AND patient_id=?", [*args, patient_id]
        if kind:
            q, args = q + " AND kind=?", [*args, kind]
        return [json.loads(b) for (b,) in self._db.execute(q + " ORDER BY device_ts", args)]

    def ecg_samples(self, patient_id: str) -> list[tuple[str, float, np.ndarray]]:
        rows = self._db.execute(
            "SELECT device_ts, fs, samples_uv FROM ecg_frames WHERE patient_id=? ORDER BY device_ts", (patient_id,)
        )
        return [(ts, fs, _samples(b)) for ts, fs, b in rows]

    def mark_referred(self, strip_key: str, by: str, at: datetime, note: str = "") -> bool | None:
        """A doctor referred the patient of this strip: True; False if it was already marked; None: no such strip.

        Commits on its own (the caller makes sure no reading transaction is open on this connection)."""
        if not self._db.execute("SELECT 1 FROM strips WHERE idempotency_key=?", (strip_key,)).fetchone():
            return None
        cur = self._db.execute("INSERT OR IGNORE INTO strip_referrals VALUES (?,?,?,?)", (strip_key, iso(at), by, note))
        return cur.rowcount == 1

    def counts(self) -> dict[str, int]:
        n = self._db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        e = self._db.execute("SELECT COUNT(*) FROM ecg_frames").fetchone()[0]
        return {"readings": n, "ecg_frames": e}

    def close(self) -> None:
        self._db.close()


class ReadOnlyDb:
    """A read-only connection to one SQLite file, opened on first use.

    A file that does not exist yet, or a table its writer has not created yet, reads as empty.
    Usable from worker threads (the console renders reports in one).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def rows(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        if self._conn is None:
            if not self.path.exists():
                return []
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout=5000")
        try:
            return self._conn.execute(sql, tuple(args)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # the writer has not created it yet
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class EcgStrip:
    """A contiguous stretch of one lead: samples in µV at `fs` Hz, the first one at `start` (device time)."""

    fs: float
    start: datetime
    samples_uv: np.ndarray
    lead_off: bool = False
    device_id: str | None = None

    @property
    def seconds(self) -> float:
        return len(self.samples_uv) / self.fs if self.fs else 0.0


def _samples(blob: bytes) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype="<i4")


class StoredFrameTime(NamedTuple):
    """Where a stored ECG frame sits in its device's stream (binary frames' time base is restored from these)."""

    ts: datetime
    seq: int
    received_at: datetime
    fs: float
    n_samples: int


class ReadingQueries:
    """The reading store's queries for other rooms, read-only over `readings.db` (module docstring).

    Readings are keyed by device time (`device_ts`, +08:00, as stored); `since`/`until` are aware datetimes.
    """

    def __init__(self, path: Path) -> None:
        self._db = ReadOnlyDb(path)

    def close(self) -> None:
        self._db.close()

    def find(
        self,
        patient_id: str | None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        with_keys: bool = False,
    ) -> list[dict[str, Any]]:
        """Accepted readings (the public payload), oldest first by device time."""
        q, args = "SELECT idempotency_key, body FROM readings WHERE 1=1", list[object]()
        if patient_id:
            q, args = q + " AND patient_id=?", [*args, patient_id]
        if kind:
            q, args = q + " AND kind=?", [*args, kind]
        if since is not None:
            q, args = q + " AND device_ts>=?", [*args, iso(since)]
        if until is not None:
            q, args = q + " AND device_ts<=?", [*args, iso(until)]
        out = []
        for key, body in self._db.rows(q + " ORDER BY device_ts", args):
            b = json.loads(body)
            if with_keys:
                b["_key"] = key
            out.append(b)
        return out

    def latest(self, patient_id: str, kind: str) -> dict[str, Any] | None:
        rows = self._db.rows(
            "SELECT body FROM readings WHERE patient_id=? AND kind=? ORDER BY device_ts DESC LIMIT 1",
            (patient_id, kind),
        )
        return json.loads(rows[0][0]) if rows else None

    # Per-device look-ups go through the (patient_id, device_ts) indexes: the ECG frame table holds a row
    # per patch-second, so a scan without the patient would cost seconds on a month-old box.

    def latest_battery(self, patient_id: str, device_id: str) -> dict[str, Any] | None:
        """The device's latest battery reading ({percent, ts, ...}), if it ever sent one."""
        rows = self._db.rows(
            "SELECT body FROM readings WHERE patient_id=? AND kind='battery' AND device_id=? "
            "ORDER BY device_ts DESC LIMIT 1",
            (patient_id, device_id),
        )
        return json.loads(rows[0][0]) if rows else None

    def last_reading_at(self, patient_id: str, device_id: str) -> datetime | None:
        """Receive time of the device's latest stored reading or ECG frame (known again after a restart)."""
        best: datetime | None = None
        for table in ("readings", "ecg_frames", "strips"):
            rows = self._db.rows(
                f"SELECT received_at FROM {table} WHERE patient_id=? AND device_id=? ORDER BY device_ts DESC LIMIT 1",
                (patient_id, device_id),
            )
            if rows:
                at = datetime.fromisoformat(rows[0][0])
                best = at if best is None else max(best, at)
        return best

    def first_reading_ts(self, patient_id: str, device_id: str) -> datetime | None:
        rows = self._db.rows(
            "SELECT device_ts FROM readings WHERE patient_id=? AND device_id=? "
            "AND kind!='battery' ORDER BY device_ts LIMIT 1",
            (patient_id, device_id),
        )
        return datetime.fromisoformat(rows[0][0]) if rows else None

    def count_by_device(self, patient_id: str, since: datetime) -> dict[str, int]:
        rows = self._db.rows(
            "SELECT device_id, COUNT(*) FROM readings WHERE patient_id=? AND device_ts>=? "
            "AND kind!='battery' GROUP BY device_id",
            (patient_id, iso(since)),
        )
        return {d: int(n) for d, n in rows}

    def received_since(self, since: datetime, limit: int, patient_id: str | None = None) -> list[tuple]:
        """(patient_id, idempotency_key, device_id, received_at, source, body) of the readings received
        since `since`, at most `limit` per patient (the newest), oldest arrival first: one query for all."""
        return self._db.rows(
            "SELECT patient_id, idempotency_key, device_id, received_at, source, body FROM ("
            " SELECT *, rowid AS arrival, ROW_NUMBER() OVER (PARTITION BY patient_id ORDER BY rowid DESC) AS newest"
            " FROM readings WHERE received_at >= ? AND (? IS NULL OR patient_id = ?)"
            ") WHERE newest <= ? ORDER BY arrival",
            (iso(since), patient_id, patient_id, limit),
        )

    # ------------------------------------------------------------ ECG

    def ecg_latest(self, patient_id: str, seconds: float = 10.0) -> EcgStrip | None:
        """The last `seconds` of stored ECG of a patient, as one strip (gaps between frames are closed up)."""
        seconds = min(seconds, MAX_STRIP_S)
        rows = self._db.rows(
            "SELECT device_id, device_ts, fs, lead_off, samples_uv FROM ecg_frames "
            "WHERE patient_id=? ORDER BY device_ts DESC LIMIT ?",
            (patient_id, int(seconds) + 2),
        )
        if not rows:
            return None
        device = rows[0][0]
        rows = [r for r in rows if r[0] == device and r[2] == rows[0][2]][::-1]
        fs = float(rows[0][2])
        samples = np.concatenate([_samples(r[4]) for r in rows])
        n = int(round(seconds * fs))
        samples = samples[-n:]
        last_ts = datetime.fromisoformat(rows[-1][1])
        last_len = len(_samples(rows[-1][4]))
        start = last_ts + timedelta(seconds=last_len / fs) - timedelta(seconds=len(samples) / fs)
        return EcgStrip(fs, start, samples, lead_off=bool(rows[-1][3]), device_id=device)

    # The frame log: ECG frames in the order they were committed (rowid order = arrival order), read by the
    # ECG analysis behind the frames' acknowledgement (shards/ecg_analysis.py). Only committed rows are seen.

    def ecg_log_after(self, rowid: int, limit: int, patients: Container[str] | None = None) -> tuple[list[tuple], int]:
        """(frames, upto): at most `limit` frames committed after `rowid`, oldest first, and the last rowid
        read (`rowid` when none). A frame: (rowid, idempotency_key, patient_id, device_id, device_ts,
        received_at, seq, fs, lead_off, samples µV as int32). `patients`: only theirs (others are skipped
        undecoded, but still advance `upto`)."""
        rows = self._db.rows(
            "SELECT rowid, idempotency_key, patient_id, device_id, device_ts, received_at, seq, fs, "
            "lead_off, samples_uv FROM ecg_frames WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (rowid, limit),
        )
        frames = [(*r[:9], _samples(r[9])) for r in rows if patients is None or r[2] in patients]
        return frames, (rows[-1][0] if rows else rowid)

    def ecg_log_head(self) -> int:
        """The rowid of the newest committed frame (0: none)."""
        rows = self._db.rows("SELECT max(rowid) FROM ecg_frames")
        return int(rows[0][0] or 0) if rows else 0

    def ecg_log_oldest_after(self, rowid: int) -> datetime | None:
        """Receive time of the first committed frame after `rowid` (None: there is none)."""
        rows = self._db.rows("SELECT received_at FROM ecg_frames WHERE rowid > ? ORDER BY rowid LIMIT 1", (rowid,))
        return datetime.fromisoformat(rows[0][0]) if rows else None

    def ecg_frame_times(self, patient_id: str, device_id: str, limit: int) -> list[StoredFrameTime]:
        """The device's last `limit` stored frames' times and counts, oldest first (no samples)."""
        rows = self._db.rows(
            "SELECT device_ts, seq, received_at, fs, n_samples FROM ecg_frames WHERE patient_id=? AND device_id=?"
            " ORDER BY device_ts DESC LIMIT ?",
            (patient_id, device_id, limit),
        )
        return [
            StoredFrameTime(datetime.fromisoformat(t), int(seq), datetime.fromisoformat(rx), float(fs), int(n))
            for t, seq, rx, fs, n in reversed(rows)
            if seq is not None
        ]

    def ecg_frames(
        self, patient_id: str, since: datetime | None = None, until: datetime | None = None
    ) -> list[tuple[str, datetime, float, np.ndarray]]:
        """(device_id, device time, fs, samples µV) per stored frame, oldest first."""
        q, args = "SELECT device_id, device_ts, fs, samples_uv FROM ecg_frames WHERE patient_id=?", [patient_id]
        if since is not None:
            q, args = q + " AND device_ts>=?", [*args, iso(since)]
        if until is not None:
            q, args = q + " AND device_ts<=?", [*args, iso(until)]
        return [
            (d, datetime.fromisoformat(t), float(fs), _samples(b))
            for d, t, fs, b in self._db.rows(q + " ORDER BY device_ts", args)
        ]

    # ------------------------------------------------------------ screening strips

    _STRIP_COLS = (
        "s.idempotency_key, s.strip_id, s.patient_id, s.device_id, s.device_ts, s.received_at, s.fs, "
        "s.n_samples, s.label, s.confidence, s.hr_bpm, s.model, s.body, "
        "r.referred_at, r.referred_by, r.note"
    )

    @staticmethod
    def _strip_row(row: tuple) -> dict[str, Any]:
        key, strip_id, pid, dev, ts, rec, fs, n, label, conf, hr, model, body, ref_at, ref_by, note = row
        b = json.loads(body)
        return {
            "key": key,
            "strip_id": strip_id,
            "patient_id": pid,
            "device_id": dev,
            "ts": ts,
            "received_at": rec,
            "fs": float(fs),
            "seconds": n / fs if fs else 0.0,
            "label": label,
            "confidence": float(conf),
            "hr_bpm": hr,
            "model": model,
            "probabilities": b.get("probabilities", {}),
            "beats": b.get("beats"),
            "lead": b.get("lead"),
            "referred_at": ref_at,
            "referred_by": ref_by,
            "referral_note": note,
        }

    def strips(
        self,
        patient_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        labels: tuple[str, ...] | None = None,
        referred: bool | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Screening strips without their samples, newest first by device time; `referred` False: not yet
        marked referred, True: marked. Each row: key (the strip's idempotency key, its id in URLs),
        strip_id, patient_id, device_id, ts, received_at, fs, seconds, label, confidence, hr_bpm, model,
        probabilities, beats, lead, referred_at / referred_by / referral_note (None until referred)."""
        q = (
            f"SELECT {self._STRIP_COLS} FROM strips s LEFT JOIN strip_referrals r "
            "ON r.idempotency_key = s.idempotency_key WHERE 1=1"
        )
        args: list[object] = []
        if patient_id:
            q, args = q + " AND s.patient_id=?", [*args, patient_id]
        if since is not None:
            q, args = q + " AND s.device_ts>=?", [*args, iso(since)]
        if until is not None:
            q, args = q + " AND s.device_ts<=?", [*args, iso(until)]
        if labels:
            q, args = q + f" AND s.label IN ({','.join('?' * len(labels))})", [*args, *labels]
        if referred is not None:
            q += " AND r.idempotency_key IS NOT NULL" if referred else " AND r.idempotency_key IS NULL"
        rows = self._db.rows(q + " ORDER BY s.device_ts DESC LIMIT ?", [*args, int(limit)])
        return [self._strip_row(r) for r in rows]

    def strip(self, key: str) -> dict[str, Any] | None:
        """One strip as `strips()` gives it, plus `samples_uv` (µV, int32 array)."""
        rows = self._db.rows(
            f"SELECT {self._STRIP_COLS}, s.samples_uv FROM strips s LEFT JOIN strip_referrals r "
            "ON r.idempotency_key = s.idempotency_key WHERE s.idempotency_key=?",
            (key,),
        )
        if not rows:
            return None
        out = self._strip_row(rows[0][:-1])
        out["samples_uv"] = np.frombuffer(zlib.decompress(rows[0][-1]), dtype="<i2").astype(np.int32)
        return out
