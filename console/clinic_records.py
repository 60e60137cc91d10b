"""Read-only view of one clinic's storage directory, for the doctor's page, reports and the FHIR export.

Reads `readings.db` (stream/store.py), `alerts.db` (dispatch/alert_store.py)
and `rhythm.db` (stream/rhythm_log.py) through their own read-only SQLite
connections, so it is safe beside a running gateway (WAL readers never block
the writer) and after it has stopped. A file that does not exist yet reads as
empty.

Times: readings are keyed by device time (`ts`, +08:00, as stored); alert
times are gateway clock. Arguments `since`/`until` are aware datetimes.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from stream.models import iso

READINGS_DB = "readings.db"
ALERTS_DB = "alerts.db"
RHYTHM_DB = "rhythm.db"
MAX_STRIP_S = 60.0  # the live strip and evidence windows never read more than this


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


def _connect(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class ClinicRecords:
    def __init__(self, storage: Path) -> None:
        self.storage = Path(storage)
        self._conns: dict[str, sqlite3.Connection | None] = {}

    def _db(self, name: str) -> sqlite3.Connection | None:
        conn = self._conns.get(name)
        if conn is None:
            conn = _connect(self.storage / name)
            if conn is not None:
                self._conns[name] = conn
        return conn

    def _rows(self, name: str, sql: str, args: tuple | list = ()) -> list[tuple]:
        db = self._db(name)
        if db is None:
            return []
        try:
            return db.execute(sql, tuple(args)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # the writer has not created it yet
            raise

    def close(self) -> None:
        for conn in self._conns.values():
            if conn is not None:
                conn.close()
        self._conns.clear()

    # ------------------------------------------------------------ readings

    def readings(self, patient_id: str | None, kind: str | None = None, since: datetime | None = None,
                 until: datetime | None = None, with_keys: bool = False) -> list[dict[str, Any]]:
        """Accepted readings (the public payload), oldest first by device time."""
        q, args = "SELECT idempotency_key, body FROM readings WHERE 1=1", []
        if patient_id:
            q, args = q + " AND patient_id=?", [*args, patient_id]
        if kind:
            q, args = q + " AND kind=?", [*args, kind]
        if since is not None:
            q, args = q + " AND device_ts>=?", [*args, iso(since)]
        if until is not None:
            q, args = q + " AND device_ts<=?", [*args, iso(until)]
        out = []
        for key, body in self._rows(READINGS_DB, q + " ORDER BY device_ts", args):
            b = json.loads(body)
            if with_keys:
                b["_key"] = key
            out.append(b)
        return out

    def latest(self, patient_id: str, kind: str) -> dict[str, Any] | None:
        rows = self._rows(READINGS_DB, "SELECT body FROM readings WHERE patient_id=? AND kind=? "
                                       "ORDER BY device_ts DESC LIMIT 1", (patient_id, kind))
        return json.loads(rows[0][0]) if rows else None

    # Per-device look-ups go through the (patient_id, device_ts) indexes: the ECG frame table holds a row
    # per patch-second, so a scan without the patient would cost seconds on a month-old box.

    def latest_battery(self, patient_id: str, device_id: str) -> dict[str, Any] | None:
        """The device's latest battery reading ({percent, ts, ...}), if it ever sent one."""
        rows = self._rows(READINGS_DB, "SELECT body FROM readings WHERE patient_id=? AND kind='battery' AND device_id=? "
                                       "ORDER BY device_ts DESC LIMIT 1", (patient_id, device_id))
        return json.loads(rows[0][0]) if rows else None

    def last_reading_at(self, patient_id: str, device_id: str) -> datetime | None:
        """Receive time of the device's latest stored reading or ECG frame (known again after a restart)."""
        best: datetime | None = None
        for table in ("readings", "ecg_frames"):
            rows = self._rows(READINGS_DB, f"SELECT received_at FROM {table} WHERE patient_id=? AND device_id=? "
                                           "ORDER BY device_ts DESC LIMIT 1", (patient_id, device_id))
            if rows:
                at = datetime.fromisoformat(rows[0][0])
                best = at if best is None else max(best, at)
        return best

    def first_reading_ts(self, patient_id: str, device_id: str) -> datetime | None:
        rows = self._rows(READINGS_DB, "SELECT device_ts FROM readings WHERE patient_id=? AND device_id=? "
                                       "AND kind!='battery' ORDER BY device_ts LIMIT 1", (patient_id, device_id))
        return datetime.fromisoformat(rows[0][0]) if rows else None

    def count_by_device(self, patient_id: str, since: datetime) -> dict[str, int]:
        rows = self._rows(READINGS_DB, "SELECT device_id, COUNT(*) FROM readings WHERE patient_id=? AND device_ts>=? "
                                       "AND kind!='battery' GROUP BY device_id", (patient_id, iso(since)))
        return {d: int(n) for d, n in rows}

    # ------------------------------------------------------------ ECG

    def ecg_latest(self, patient_id: str, seconds: float = 10.0) -> EcgStrip | None:
        """The last `seconds` of stored ECG of a patient, as one strip (gaps between frames are closed up)."""
        seconds = min(seconds, MAX_STRIP_S)
        rows = self._rows(READINGS_DB, "SELECT device_id, device_ts, fs, lead_off, samples_uv FROM ecg_frames "
                                       "WHERE patient_id=? ORDER BY device_ts DESC LIMIT ?",
                          (patient_id, int(seconds) + 2))
        if not rows:
            return None
        device = rows[0][0]
        rows = [r for r in rows if r[0] == device and r[2] == rows[0][2]][::-1]
        fs = float(rows[0][2])
        samples = np.concatenate([np.frombuffer(zlib.decompress(r[4]), dtype="<i4") for r in rows])
        n = int(round(seconds * fs))
        samples = samples[-n:]
        last_ts = datetime.fromisoformat(rows[-1][1])
        last_len = len(np.frombuffer(zlib.decompress(rows[-1][4]), dtype="<i4"))
        start = last_ts + timedelta(seconds=last_len / fs) - timedelta(seconds=len(samples) / fs)
        return EcgStrip(fs, start, samples, lead_off=bool(rows[-1][3]), device_id=device)

    def ecg_frames(self, patient_id: str, since: datetime | None = None,
                   until: datetime | None = None) -> list[tuple[str, datetime, float, np.ndarray]]:
        """(device_id, device time, fs, samples µV) per stored frame, oldest first."""
        q, args = "SELECT device_id, device_ts, fs, samples_uv FROM ecg_frames WHERE patient_id=?", [patient_id]
        if since is not None:
            q, args = q + " AND device_ts>=?", [*args, iso(since)]
        if until is not None:
            q, args = q + " AND device_ts<=?", [*args, iso(until)]
        return [(d, datetime.fromisoformat(t), float(fs), np.frombuffer(zlib.decompress(b), dtype="<i4"))
                for d, t, fs, b in self._rows(READINGS_DB, q + " ORDER BY device_ts", args)]

    # ------------------------------------------------------------ rhythm (per-minute ECG summaries)

    def rhythm(self, patient_id: str, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
        q, args = ("SELECT device_id, ts, hr_bpm, rhythm, quality, lead_off_s, window_s, beats FROM ecg_summaries "
                   "WHERE patient_id=?", [patient_id])
        if since is not None:
            q, args = q + " AND ts>=?", [*args, iso(since)]
        if until is not None:
            q, args = q + " AND ts<=?", [*args, iso(until)]
        keys = ("device_id", "ts", "hr_bpm", "rhythm", "quality", "lead_off_s", "window_s", "beats")
        out = []
        for r in self._rows(RHYTHM_DB, q + " ORDER BY ts", args):
            d = dict(zip(keys, r))
            d["beats"] = json.loads(d["beats"] or "{}")
            out.append(d)
        return out

    def latest_rhythm(self, patient_id: str) -> dict | None:
        rows = self._rows(RHYTHM_DB, "SELECT ts, hr_bpm, rhythm, quality FROM ecg_summaries WHERE patient_id=? "
                                     "ORDER BY ts DESC LIMIT 1", (patient_id,))
        if not rows:
            return None
        ts, hr, rhythm, q = rows[0]
        return {"ts": ts, "hr_bpm": hr, "rhythm": rhythm, "quality": q}

    # ------------------------------------------------------------ alerts

    def alerts(self, patient_id: str | None = None, since: datetime | None = None) -> list[dict]:
        """Alerts (public payload) that were open at some time after `since`, oldest first, each with
        its `transitions` ({at, what, tier, detail})."""
        q, args = "SELECT alert_id, body FROM alerts WHERE 1=1", []
        if patient_id:
            q, args = q + " AND patient_id=?", [*args, patient_id]
        alerts = {}
        for aid, body in self._rows(ALERTS_DB, q, args):
            alerts[aid] = json.loads(body)
        if not alerts:
            return []
        trans: dict[str, list[dict]] = {a: [] for a in alerts}
        has_tier = any(r[1] == "tier" for r in self._rows(ALERTS_DB, "PRAGMA table_info(transitions)"))
        cols = "alert_id, at, what, detail" + (", tier" if has_tier else "")
        q2, args2 = f"SELECT {cols} FROM transitions", []
        if patient_id and has_tier:
            q2, args2 = q2 + " WHERE patient_id=? OR alert_id IN (SELECT alert_id FROM alerts WHERE patient_id=?)", \
                [patient_id, patient_id]
        for row in self._rows(ALERTS_DB, q2 + " ORDER BY id", args2):
            if row[0] in trans:
                trans[row[0]].append({"at": row[1], "what": row[2], "detail": json.loads(row[3]),
                                      "tier": row[4] if has_tier else None})
        out = []
        for aid, a in alerts.items():
            a["transitions"] = trans[aid]
            last = trans[aid][-1]["at"] if trans[aid] else a.get("updated_at") or a["opened_at"]
            if since is not None and datetime.fromisoformat(last) < since:
                continue
            out.append(a)
        out.sort(key=lambda a: a["opened_at"])
        return out
