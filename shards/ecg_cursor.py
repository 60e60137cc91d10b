"""The ECG analysis' durable position in the frame log (`shards.db`, owned here).

One row per reader of the log (the in-process analysis, or each worker's
shard): the rowid of `readings.db`'s `ecg_frames` up to which every frame has
been analysed *and* what it caused is committed (alert transitions in
`alerts.db`, summaries staged for the uplink). A reader that starts again goes
on from there, so a frame acknowledged to the broker (committed, then acked)
but not yet analysed when the process died is analysed after the restart.

Saved at most once a second, so up to a second of frames may be analysed a
second time after a crash: a repeated finding updates the open alert, it does
not raise a new one. `synchronous=NORMAL` is enough for the same reason: a
power cut can only move the position back, never past a frame it did not
cover.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from stream.models import iso
from stream.store import open_sqlite

FILE_NAME = "shards.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ecg_cursor (
    reader TEXT PRIMARY KEY,
    upto INTEGER NOT NULL,
    saved_at TEXT NOT NULL
);
"""


class EcgCursor:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / FILE_NAME
        self._db = open_sqlite(self.path, durable=False)
        self._db.executescript(_SCHEMA)

    def load(self) -> dict[str, int]:
        """reader -> rowid analysed up to."""
        return {r: int(u) for r, u in self._db.execute("SELECT reader, upto FROM ecg_cursor")}

    def save(self, reader: str, upto: int, at: datetime) -> None:
        self._db.execute(
            "INSERT INTO ecg_cursor VALUES (?,?,?) ON CONFLICT(reader) DO UPDATE SET "
            "upto=excluded.upto, saved_at=excluded.saved_at",
            (reader, int(upto), iso(at)),
        )

    def replace(self, positions: dict[str, int], at: datetime) -> None:
        """Set the readers and their positions at once (the number of shards changed)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM ecg_cursor")
            self._db.executemany(
                "INSERT INTO ecg_cursor VALUES (?,?,?)", [(r, int(u), iso(at)) for r, u in positions.items()]
            )

    def close(self) -> None:
        self._db.close()
