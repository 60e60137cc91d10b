"""The last glucose record sequence number delivered from each meter, kept across restarts.

RACP back-fill asks a meter for records with seq >= watermark + 1 on every
connect (docs/spec/gatt.md §RACP); the watermark is written after each record has been
handed to the stream core, so a gateway restart resumes where it stopped.
It lives in ``ble.db`` under ``storage.path``.
"""

from __future__ import annotations

from pathlib import Path

from stream.models import iso, now_local
from stream.store import open_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS racp_watermark (
    device_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
"""


class RacpWatermarks:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / "ble.db"
        self._db = open_sqlite(self.path)
        self._db.executescript(_SCHEMA)

    def get(self, device_id: str) -> int | None:
        row = self._db.execute("SELECT last_seq FROM racp_watermark WHERE device_id=?", (device_id,)).fetchone()
        return None if row is None else int(row[0])

    def set(self, device_id: str, seq: int) -> None:
        self._db.execute(
            "INSERT INTO racp_watermark VALUES (?,?,?) ON CONFLICT(device_id) DO UPDATE "
            "SET last_seq=excluded.last_seq, updated_at=excluded.updated_at",
            (device_id, seq, iso(now_local())),
        )

    def close(self) -> None:
        self._db.close()
