"""The rhythm log: every per-minute `ecg_summary` the analyser produces, kept in `rhythm.db`.

Raw ECG frames are in the reading store, but the analyser's judgement of them
(heart rate, rhythm, beat counts, signal quality) is derived and is not: it is
published and forwarded only. The village doctor's page shows the latest one
per patient ("heart rhythm") and the patient report sums them into AF burden,
so they are written here, one row per patient-minute (about 1,440 small rows
per patch per day).

A failed write is logged and dropped: a lost summary costs one minute of
burden statistics, never a reading or an alert. Others read the table through
`RhythmQueries` (read-only, safe beside the running gateway).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime
from pathlib import Path

from stream.models import Accepted, EcgSummary, iso
from stream.store import ReadOnlyDb, open_sqlite

log = logging.getLogger("vitalgate.rhythm")

FILE_NAME = "rhythm.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ecg_summaries (
    patient_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    ts TEXT NOT NULL,              -- device time of the minute's last frame (+08:00)
    hr_bpm REAL,
    rhythm TEXT NOT NULL,          -- sinus, sinus_bradycardia, sinus_tachycardia, af, vt, vf, asystole, unknown
    quality REAL,                  -- 0..1 signal quality over the minute
    lead_off_s REAL NOT NULL,
    window_s REAL NOT NULL,        -- seconds of signal the minute covered
    beats TEXT NOT NULL,           -- JSON: beat counts by class
    PRIMARY KEY (patient_id, device_id, ts)
);
CREATE INDEX IF NOT EXISTS summaries_patient_ts ON ecg_summaries(patient_id, ts);
"""


class RhythmLog:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / FILE_NAME
        self._db = open_sqlite(self.path)
        self._db.executescript(_SCHEMA)

    def add(self, acc: Accepted) -> None:
        s = acc.reading
        if not isinstance(s, EcgSummary):
            return
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO ecg_summaries VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    acc.patient_id,
                    acc.device_id,
                    iso(s.ts),
                    s.hr_bpm,
                    s.rhythm,
                    s.quality,
                    s.lead_off_s,
                    s.window_s,
                    json.dumps(s.beats),
                ),
            )
        except sqlite3.Error as exc:
            log.warning("could not write an ECG summary: %s", exc, extra={"patient_id": acc.patient_id})

    def close(self) -> None:
        self._db.close()


class RhythmQueries:
    """The rhythm log's queries for other rooms (the console, the patient report), read-only over `rhythm.db`."""

    def __init__(self, path: Path) -> None:
        self._db = ReadOnlyDb(path)

    def close(self) -> None:
        self._db.close()

    def minutes(self, patient_id: str, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
        """The patient's per-minute summaries, oldest first (`ts` is device time)."""
        q, args = (
            "SELECT device_id, ts, hr_bpm, rhythm, quality, lead_off_s, window_s, beats FROM ecg_summaries "
            "WHERE patient_id=?",
            [patient_id],
        )
        if since is not None:
            q, args = q + " AND ts>=?", [*args, iso(since)]
        if until is not None:
            q, args = q + " AND ts<=?", [*args, iso(until)]
        keys = ("device_id", "ts", "hr_bpm", "rhythm", "quality", "lead_off_s", "window_s", "beats")
        out = []
        for r in self._db.rows(q + " ORDER BY ts", args):
            d = dict(zip(keys, r))
            d["beats"] = json.loads(d["beats"] or "{}")
            out.append(d)
        return out

    def latest(self, patient_id: str) -> dict | None:
        rows = self._db.rows(
            "SELECT ts, hr_bpm, rhythm, quality FROM ecg_summaries WHERE patient_id=? ORDER BY ts DESC LIMIT 1",
            (patient_id,),
        )
        if not rows:
            return None
        ts, hr, rhythm, q = rows[0]
        return {"ts": ts, "hr_bpm": hr, "rhythm": rhythm, "quality": q}
