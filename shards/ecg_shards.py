"""ECG analysis on every core: worker processes, each a shard of the patients, under a supervisor.

The gateway process keeps everything that must be quick and in one place (the
MQTT sessions, both lanes' ingest, the stores' commits, the acknowledgements,
the rules, the dispatcher); the streaming arrhythmia analysis, the bulk of
the CPU, runs in `workers` processes (`python -m shards.ecg_worker`). Each
reads the frame log itself (read-only, committed frames only) and keeps its
patients' frames (a stable hash of the patient id: a patient always on the
same worker, its frames in commit order), and sends back findings, summaries,
log records and its position (`ecg_worker.py` has the protocol).

The guarantees of the one-process gateway hold:

* per-patient order: one worker per patient, frames in commit order;
* acknowledgement after the commit: unchanged, the workers only read;
* nothing lost on SIGKILL of any process: a worker's results are handled
  (alerts committed) before its position is taken, and the positions are
  saved each second (`ecg_cursor.py`); a killed worker's successor starts at
  its last position, a killed gateway's workers see their stdin close and
  exit, and the restarted gateway starts them at the saved positions;
* the supervisor restarts a dead worker (backoff 0.5 s doubling to 10 s,
  back to 0.5 s after a worker that ran 30 s), and counts it in the status.

The workers run at a lower CPU priority (`WORKER_NICE`): when the box is
short of CPU the ingest and the critical lane go first and the analysis lags,
which the status says (`ecg_analysis_lagging`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from shards.ecg_analysis import (
    LAG_CHECK_S,
    LAG_WARN_S,
    SAVE_EVERY_S,
    FindingHandler,
    LagWatch,
    ReadingPublisher,
    analysis_status,
)
from shards.ecg_cursor import EcgCursor
from stream.models import Accepted, Finding, now_local
from stream.store import FILE_NAME as READINGS_FILE
from stream.store import ReadingQueries

log = logging.getLogger("vitalgate.ecg_shards")
worker_log = logging.getLogger("vitalgate.ecg_worker")

WORKER_NICE = 5  # the analysis yields the CPU to the ingest and the critical lane when both want it
RESTART_MIN_S = 0.5
RESTART_MAX_S = 10.0
STABLE_S = 30.0  # a worker that ran this long restarts after RESTART_MIN_S again
STOP_WAIT_S = 3.0  # after its stdin closes, a worker gets this long to exit before it is killed
LINE_LIMIT = 1 << 20  # bytes in one result line


def auto_workers() -> int:
    """One worker per core (the gateway process itself mostly waits on I/O and commits)."""
    return max(1, min(os.cpu_count() or 1, 8))


def reader_name(k: int, n: int) -> str:
    return f"shard-{k}-of-{n}"


class EcgShards:
    """The supervisor: the same face as `ecg_analysis.EcgAnalysis` (run, status, catch_up, close)."""

    def __init__(
        self,
        storage: Path,
        on_finding: FindingHandler,
        publish_summary: ReadingPublisher,
        workers: int,
        clock: Callable[[], datetime] = now_local,
        lag_warn_s: float = LAG_WARN_S,
        log_level: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1 (0: use EcgAnalysis in the gateway process)")
        self.storage = Path(storage)
        self.n = workers
        self._on_finding = on_finding
        self._publish = publish_summary
        self._clock = clock
        self._log_level = log_level or logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self._log = ReadingQueries(self.storage / READINGS_FILE)
        self._cursor_store: EcgCursor | None = None
        self.positions = [0] * workers
        self._saved = [-1] * workers
        self._procs: list[asyncio.subprocess.Process | None] = [None] * workers
        self.analysed = 0
        self.restarts = 0
        self.lag = LagWatch(lag_warn_s)

    @property
    def cursor(self) -> int:
        """Every frame up to here is analysed, whichever worker it went to."""
        return min(self.positions)

    def wake(self) -> None:
        """(The workers poll the log every 50 ms; nothing to do.)"""

    # ------------------------------------------------------------ positions

    def _open(self) -> None:
        self._cursor_store = EcgCursor(self.storage)
        saved = self._cursor_store.load()
        names = [reader_name(k, self.n) for k in range(self.n)]
        if all(n in saved for n in names):
            self.positions = [saved[n] for n in names]
        else:
            # Another layout ran before (the in-process analysis, another number of workers): the least
            # position covers every patient; what some had analysed already is analysed again.
            start = min(saved.values()) if saved else self._log.ecg_log_head()
            self.positions = [start] * self.n
            self._cursor_store.replace({n: start for n in names}, self._clock())
        self._saved = list(self.positions)

    def _save(self) -> None:
        if self._cursor_store is None:
            return
        for k, upto in enumerate(self.positions):
            if upto != self._saved[k]:
                self._cursor_store.save(reader_name(k, self.n), upto, self._clock())
                self._saved[k] = upto

    # ------------------------------------------------------------ the workers

    async def run(self, stop: asyncio.Event) -> None:
        self._open()
        tasks = [asyncio.create_task(self._supervise(k, stop), name=f"ecg-worker-{k}") for k in range(self.n)]
        tasks.append(asyncio.create_task(self._keep(stop), name="ecg-positions"))
        try:
            await stop.wait()
            await asyncio.gather(*[self._stop_worker(k) for k in range(self.n)])
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for t in tasks:
                t.cancel()
            for k in range(self.n):
                proc = self._procs[k]
                if proc is not None and proc.returncode is None:
                    proc.kill()
            self._save()

    async def _supervise(self, k: int, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        backoff = RESTART_MIN_S
        while not stop.is_set():
            started = loop.time()
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "shards.ecg_worker",
                    "--storage",
                    str(self.storage),
                    "--shard",
                    str(k),
                    "--of",
                    str(self.n),
                    "--start",
                    str(self.positions[k]),
                    "--log-level",
                    self._log_level,
                    "--nice",
                    str(WORKER_NICE),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=LINE_LIMIT,
                )
            except OSError as exc:
                log.error("could not start ECG worker %d of %d: %s", k + 1, self.n, exc)
                rc: int | None = None
            else:
                self._procs[k] = proc
                await self._read(k, proc)
                rc = await proc.wait()
                self._procs[k] = None
            if stop.is_set():
                return
            self.restarts += 1
            if loop.time() - started >= STABLE_S:
                backoff = RESTART_MIN_S
            why = f"signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
            log.warning(
                "ECG worker %d of %d stopped (%s); restarting it in %.1f s from frame %d",
                k + 1,
                self.n,
                why,
                backoff,
                self.positions[k],
                extra={"shard": k, "restarts": self.restarts},
            )
            try:
                await asyncio.wait_for(stop.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, RESTART_MAX_S)

    async def _read(self, k: int, proc: asyncio.subprocess.Process) -> None:
        """Handle a worker's lines in order until its stdout closes (it exited)."""
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line over LINE_LIMIT: a broken worker
                log.error("ECG worker %d sent a line too long; stopping it", k + 1)
                proc.kill()
                return
            if not line:
                return
            try:
                msg = json.loads(line)
            except ValueError:
                log.error("ECG worker %d sent something that is not a result: %r", k + 1, line[:200])
                continue
            try:
                await self._handle(k, msg)
            except Exception:  # as the stream core does with a reading's findings: logged, the stream goes on
                log.exception("could not hand over what ECG worker %d found", k + 1)

    async def _handle(self, k: int, msg: dict[str, Any]) -> None:
        if "p" in msg:  # everything before this line is handled: the position moves
            self.positions[k] = max(self.positions[k], int(msg["p"]))
            self.analysed += int(msg.get("a", 0))
        elif "f" in msg:
            await self._on_finding(Finding.model_validate(msg["f"]))
        elif "s" in msg:
            await self._publish(Accepted.model_validate(msg["s"]))
        elif "l" in msg:
            level, text, fields = msg["l"]
            worker_log.log(int(level), "%s", text, extra=fields if isinstance(fields, dict) else None)

    async def _stop_worker(self, k: int) -> None:
        proc = self._procs[k]
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the worker exits at its next look at the log
        try:
            await asyncio.wait_for(proc.wait(), STOP_WAIT_S)
        except TimeoutError:
            proc.kill()

    async def _keep(self, stop: asyncio.Event) -> None:
        """Save the positions each second; watch the lag."""
        loop = asyncio.get_running_loop()
        next_lag = loop.time()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), SAVE_EVERY_S)
            except TimeoutError:
                pass
            self._save()
            if loop.time() >= next_lag:
                self.lag.update(self.lag_s(), self._clock())
                next_lag = loop.time() + LAG_CHECK_S

    # ------------------------------------------------------------ what the status says

    def lag_s(self) -> float:
        """Seconds since the oldest frame not yet analysed was received (0 when none waits)."""
        oldest = self._log.ecg_log_oldest_after(self.cursor)
        return max(0.0, (self._clock() - oldest).total_seconds()) if oldest is not None else 0.0

    def status(self) -> dict[str, Any]:
        return analysis_status(
            self.lag,
            self.lag_s(),
            self._log.ecg_log_head(),
            self.cursor,
            self.analysed,
            workers=self.n,
            restarts=self.restarts,
            worker_pids=[p.pid if p is not None and p.returncode is None else None for p in self._procs],
        )

    async def catch_up(self, timeout_s: float) -> None:
        """Wait (bounded) until every committed frame is analysed (shutdown: what is left waits for the restart)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._cursor_store is not None and self.cursor < self._log.ecg_log_head() and loop.time() < deadline:
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self._log.close()
        if self._cursor_store is not None:
            self._cursor_store.close()
            self._cursor_store = None
