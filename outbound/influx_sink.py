"""The time-series sink: accepted readings -> InfluxDB line protocol -> an InfluxDB 2.x API.

Schema (one measurement, `vitals`; series per patient, device and kind):

    vitals,clinic=<clinic>,device=<device_id>,kind=<kind>,patient=<patient_id> <fields> <device time, ms>

| kind | fields (float) |
|---|---|
| blood_pressure | systolic, diastolic (mmHg), pulse (bpm, when measured), body_movement, irregular_pulse, cuff_loose (0/1) |
| glucose | mmol_l (mmol/L; absent for a HI/LO reading), range_hi / range_lo (1 when the meter said HI / LO) |
| spo2 | spo2 (%), pulse (bpm, when measured) |
| heart_rate | bpm, rr_count (RR intervals in the notification) |
| battery | percent |
| ecg_summary | hr_bpm (when known), quality (0-1, when known), lead_off_s, beats (beats in the window), window_s |

- Tags are ids only: clinic, pseudonymous patient id, device id, reading kind.
  No names, no free text, nothing personal.
- Raw ECG frames are never written (one point per sample would cost more than
  the whole ingest, docs/spec/machine-limits.md): only the per-minute `ecg_summary`.
- The timestamp is the device time of the measurement, in milliseconds. A
  point written twice (a redelivery after a crash, a retry after a timeout)
  lands on the same series and timestamp, so InfluxDB overwrites it and
  VictoriaMetrics (with `-dedup.minScrapeInterval=1ms`) keeps one.
- In VictoriaMetrics a field becomes the metric `vitals_<field>`, tags become labels.

Why not influxdb-client's batching WriteApi: it loses data silently when the
server refuses writes (docs/spec/machine-limits.md). The sink writes line-protocol strings with
the synchronous API, in batches, from its own SQLite outbox
(`tsdb_outbox.db`): readings are staged with the reading store's write and
committed before the local broker is acknowledged; a writer task takes them
out in order and deletes them only after the server accepted them, retrying
with exponential backoff, so a TSDB outage loses nothing. The HTTP call runs
in a worker thread and the patient workers only append to the outbox, so a
slow or dead TSDB never delays judging readings or sending alerts
(back-pressure ends at the outbox; its bound, `max_outbox` lines, drops the
oldest lines with an error in the log and a counter when reached: the readings
themselves stay in the reading store).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from stream.models import (
    Accepted,
    BatteryReading,
    BloodPressureReading,
    EcgSummary,
    GlucoseReading,
    HeartRateReading,
    Spo2Reading,
)
from stream.retry_backoff import jittered
from stream.store import open_sqlite
from stream.waiting import wait_any

log = logging.getLogger("vitalgate.tsdb")

MEASUREMENT = "vitals"
TSDB_OUTBOX_FILE = "tsdb_outbox.db"
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 60.0
HTTP_TIMEOUT_MS = 5_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lines (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL
);
"""


def _tag(v: str) -> str:
    return v.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _fields(acc: Accepted) -> dict[str, float]:
    r = acc.reading
    f: dict[str, float | None]
    if isinstance(r, BloodPressureReading):
        f = {
            "systolic": r.systolic,
            "diastolic": r.diastolic,
            "pulse": r.pulse,
            "body_movement": float(r.status.body_movement),
            "irregular_pulse": float(r.status.irregular_pulse),
            "cuff_loose": float(r.status.cuff_loose),
        }
    elif isinstance(r, GlucoseReading):
        f = {
            "mmol_l": r.mmol_l,
            "range_hi": 1.0 if r.range == "hi" else None,
            "range_lo": 1.0 if r.range == "lo" else None,
        }
    elif isinstance(r, Spo2Reading):
        f = {"spo2": r.spo2, "pulse": r.pulse}
    elif isinstance(r, HeartRateReading):
        f = {"bpm": r.bpm, "rr_count": float(len(r.rr_ms))}
    elif isinstance(r, BatteryReading):
        f = {"percent": float(r.percent)}
    elif isinstance(r, EcgSummary):
        f = {
            "hr_bpm": r.hr_bpm,
            "quality": r.quality,
            "lead_off_s": r.lead_off_s,
            "beats": float(sum(r.beats.values())),
            "window_s": r.window_s,
        }
    else:  # raw ECG frames and anything unknown: not a time series
        return {}
    return {k: float(v) for k, v in f.items() if v is not None and math.isfinite(float(v))}


def to_line(acc: Accepted, clinic: str) -> str | None:
    """One reading as one line of InfluxDB line protocol, or None if it is not written (ECG frames)."""
    fields = _fields(acc)
    if not fields:
        return None
    tags = (
        f"clinic={_tag(clinic)},device={_tag(acc.device_id)},kind={_tag(acc.reading.kind)},"
        f"patient={_tag(acc.patient_id)}"
    )
    body = ",".join(f"{k}={v!r}" for k, v in fields.items())
    ts_ms = int(acc.reading.ts.timestamp() * 1000)
    return f"{MEASUREMENT},{tags} {body} {ts_ms}"


@dataclass
class WriteResult:
    ok: bool
    retry: bool = True  # False: the server refused these lines for good (malformed)
    error: str = ""


class InfluxWriter:
    """The HTTP side: synchronous influxdb-client writes of line-protocol strings (called in a thread)."""

    def __init__(self, url: str, token: str, org: str, bucket: str) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.bucket, self.org = bucket, org
        self._client = InfluxDBClient(url=url, token=token, org=org, timeout=HTTP_TIMEOUT_MS, retries=False)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._lock = threading.Lock()

    def write(self, lines: list[str]) -> WriteResult:
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        with self._lock:
            try:
                self._api.write(
                    bucket=self.bucket,
                    org=self.org,
                    record="\n".join(lines),
                    write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # the library's own constant is a str
                )
                return WriteResult(True)
            except ApiException as exc:
                # 400/422: the lines themselves are refused; 401/403/404: config (token, bucket), keep them.
                return WriteResult(False, retry=exc.status not in (400, 422), error=f"HTTP {exc.status}: {exc.reason}")
            except Exception as exc:  # connection refused, timeout, DNS...
                return WriteResult(False, error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a dead connection pool must not stop a shutdown
            pass


class InfluxSink:
    """Outbox + writer task. `stage`/`flush` make it an outbox of the gateway's store-and-forward."""

    def __init__(
        self,
        clinic: str,
        storage: Path,
        writer: InfluxWriter,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        max_outbox: int = 1_000_000,
    ) -> None:
        self.clinic = clinic
        self.writer = writer
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_outbox = max_outbox
        self.path = Path(storage) / TSDB_OUTBOX_FILE
        self._db = open_sqlite(self.path)
        self._db.executescript(_SCHEMA)
        self._staged: list[str] = []
        self.pending = self._db.execute("SELECT COUNT(*) FROM lines").fetchone()[0]
        self._wake = asyncio.Event()
        self.written = 0
        self.dropped = 0
        self.refused = 0
        self.failures = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------ outbox

    def stage(self, acc: Accepted) -> None:
        line = to_line(acc, self.clinic)
        if line is not None:
            self._staged.append(line)

    @property
    def has_staged(self) -> bool:
        return bool(self._staged)

    def flush(self) -> None:
        """Commit staged lines in one transaction (raises sqlite3.Error and keeps them on failure)."""
        if not self._staged:
            return
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO lines(line) VALUES (?)", [(x,) for x in self._staged])
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.pending += len(self._staged)
        self._staged = []
        if self.pending > self.max_outbox:
            self._drop_oldest(self.pending - self.max_outbox)
        if self.pending >= self.batch_size:
            self._wake.set()

    def _drop_oldest(self, n: int) -> None:
        cur = self._db.execute("DELETE FROM lines WHERE seq IN (SELECT seq FROM lines ORDER BY seq LIMIT ?)", (n,))
        self.pending -= cur.rowcount
        self.dropped += cur.rowcount
        log.error(
            "TSDB outbox full (%d lines): dropped the %d oldest (%d in total); they remain in the reading store",
            self.max_outbox,
            cur.rowcount,
            self.dropped,
        )

    # ------------------------------------------------------------ writer

    async def run(self, stop: asyncio.Event) -> None:
        """Write batches until `stop`; then one last attempt to empty the outbox."""
        backoff = BACKOFF_MIN_S
        while not stop.is_set():
            if self.pending < self.batch_size:
                # Wait for a full batch, but no longer than flush_interval.
                self._wake.clear()
                await wait_any(stop, self._wake, self.flush_interval_s)
                if stop.is_set():
                    break
            if await self._write_one_batch():
                backoff = BACKOFF_MIN_S
                continue
            await wait_any(stop, None, jittered(backoff))
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        await self.finish(timeout_s=5.0)

    async def finish(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.pending > 0 and loop.time() < deadline:
            if not await self._write_one_batch():
                return

    async def _write_one_batch(self) -> bool:
        rows = self._db.execute("SELECT seq, line FROM lines ORDER BY seq LIMIT ?", (self.batch_size,)).fetchall()
        if not rows:
            return True
        lines = [line for _, line in rows]
        result = await asyncio.to_thread(self.writer.write, lines)
        refused = 0
        if not result.ok and not result.retry:
            result, refused = await self._write_one_by_one(rows)
        if not result.ok:
            self.failures += 1
            if self.last_error != result.error:
                log.warning("TSDB write failed, %d lines kept for retry: %s", self.pending, result.error)
            self.last_error = result.error
            return False
        if self.last_error is not None:
            log.info("TSDB writes work again", extra={"pending": self.pending})
        self.last_error = None
        cur = self._db.execute("DELETE FROM lines WHERE seq<=?", (rows[-1][0],))
        self.pending -= cur.rowcount
        self.written += len(rows) - refused
        self.refused += refused
        return True

    async def _write_one_by_one(self, rows: list[tuple[int, str]]) -> tuple[WriteResult, int]:
        """A batch the server refused: write line by line, drop (and count) only the refused ones."""
        refused = 0
        for _, line in rows:
            r = await asyncio.to_thread(self.writer.write, [line])
            if not r.ok and r.retry:
                return r, 0  # the server went away meanwhile: keep everything
            if not r.ok:
                refused += 1
                log.error("TSDB refused a line, dropped: %s: %s", r.error, line[:200])
        return WriteResult(True), refused

    def counts(self) -> dict:
        return {
            "pending": self.pending,
            "written": self.written,
            "dropped": self.dropped,
            "refused": self.refused,
            "write_failures": self.failures,
            "last_error": self.last_error,
        }

    def close(self) -> None:
        self.writer.close()
        self._db.close()
