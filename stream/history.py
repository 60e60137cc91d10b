"""A patient's recent readings, read back from the reading store after a restart.

The rules keep per-patient state in memory: the 7-day home BP window, a crisis
waiting for its confirming reading, a low glucose waiting for its recheck,
SpO2 persistence. A power cut (common in villages) must not wipe that: a crisis
whose first reading came before the cut and whose repeat comes after it is
still a confirmed crisis. On start the gateway replays each patient's stored
readings of the last `RESTORE_WINDOW`, in the order they arrived, through the
same rules; the findings they produced were dispatched the first time, so
the replay only rebuilds state.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from stream.models import Accepted, AnyReading
from stream.store import ReadingQueries

# Longer than the longest rule window (home BP mean over 7 days, docs/spec/clinical-rules.md §Routing).
RESTORE_WINDOW = timedelta(days=8)
# A bound on the work per patient at start: more than a week of any home device's readings.
RESTORE_MAX_ROWS = 5000

_READING = TypeAdapter(AnyReading)
_ENVELOPE = ("patient_id", "device_id", "received_at")


def recent_readings_by_patient(
    db_path: Path,
    now: datetime,
    window: timedelta = RESTORE_WINDOW,
    limit: int = RESTORE_MAX_ROWS,
    patient_id: str | None = None,
) -> dict[str, list[Accepted]]:
    """Each patient's (or one patient's) stored readings received within `window` before `now`,
    at most `limit` each (the newest), oldest arrival first (the reading store's `received_since`)."""
    queries = ReadingQueries(db_path)
    try:
        rows = queries.received_since(now - window, limit, patient_id)
    except sqlite3.OperationalError:  # a store this SQLite cannot read: start with empty rule state
        return {}
    finally:
        queries.close()
    out: dict[str, list[Accepted]] = {}
    for pid, key, device_id, received_at, source, body in rows:
        try:
            fields = {k: v for k, v in json.loads(body).items() if k not in _ENVELOPE}
            acc = Accepted(
                reading=_READING.validate_python(fields),
                patient_id=pid,
                device_id=device_id,
                received_at=datetime.fromisoformat(received_at),
                source=source,
                idempotency_key=key,
            )
        except (ValueError, ValidationError):
            continue  # a row this version cannot read back: it was judged when it arrived
        out.setdefault(pid, []).append(acc)
    return out


def recent_readings(
    db_path: Path, patient_id: str, now: datetime, window: timedelta = RESTORE_WINDOW, limit: int = RESTORE_MAX_ROWS
) -> list[Accepted]:
    """One patient's share of `recent_readings_by_patient`."""
    return recent_readings_by_patient(db_path, now, window, limit, patient_id).get(patient_id, [])
