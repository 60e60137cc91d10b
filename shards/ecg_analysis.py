"""ECG analysis behind the acknowledgement: frames are analysed from the reading store's frame log.

The ECG lane only decodes, stores and acknowledges a frame (cheap, so it keeps
up with the patches); the streaming arrhythmia analysis (`stream/ecg/`, about
0.7 ms of CPU per patient-second) reads the committed frames back in commit
order, which is each device's arrival order, and runs at whatever pace the CPU
leaves it. Past capacity it falls behind instead of holding up anything else:

* the backlog is the frame log itself (on disk, never in memory), so a frame
  the broker has forgotten (acknowledged after its commit) is never lost, and
  the analysis catches up when the load falls;
* its position is durable (`ecg_cursor.py`): after a crash or SIGKILL the
  frames acknowledged but not yet analysed are analysed after the restart;
* how far behind it is, is measured (`lag_s`: seconds since the oldest frame
  not yet analysed was received) and said: the status carries it, and past
  `lag_warn_s` the technical condition `ecg_analysis_lagging`.

In the gateway process the analysis takes turns with everything else: it
gives the event loop back every `SLICE_S` of work, so a reading on the
critical lane waits at most about that long for its turn.

`FrameAnalysis` (a stored frame -> findings and a minute summary) is the same
wherever it runs; `EcgAnalysis` drives it in the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from shards.ecg_cursor import EcgCursor
from stream.ecg_frames import EcgFrameTracker
from stream.models import Accepted, EcgFrame, EcgSummary, Finding, iso, now_local
from stream.store import FILE_NAME as READINGS_FILE
from stream.store import ReadingQueries

log = logging.getLogger("vitalgate.ecg_analysis")


def analysis_status(lag: LagWatch, lag_s: float, head: int, cursor: int, analysed: int, **extra: Any) -> dict[str, Any]:
    """The `ecg_analysis` part of the gateway's status (and /metrics): how far behind, since when."""
    return {
        "condition": lag.condition,
        "lag_s": round(lag_s, 1),
        "backlog_frames": max(0, head - cursor),
        "analysed_frames": analysed,
        "analysed_upto": cursor,
        "lagging_since": iso(lag.since) if lag.since else None,
        "lag_warn_s": lag.warn_s,
        **extra,
    }


LAGGING = "ecg_analysis_lagging"  # the technical condition in the status (not an alert condition)
LAG_WARN_S = 10.0  # behind by this much: say so (docs/capacity.md)
LAG_CLEAR_FRACTION = 0.5  # ... until back under half of it (no flapping at the threshold)
BATCH = 100  # frames read from the log at a time
SLICE_S = 0.002  # analysis time between two turns of the event loop
IDLE_POLL_S = 0.25  # with nothing to do, look at the log this often even when not woken
SAVE_EVERY_S = 1.0  # the durable position, at most this often
LAG_CHECK_S = 1.0
IN_PROCESS = "in-process"  # the cursor's reader name for the analysis in the gateway process

FindingHandler = Callable[[Finding], Awaitable[object]]
ReadingPublisher = Callable[[Accepted], Awaitable[None]]
StoredFrame = tuple  # ReadingQueries.ecg_log_after's row


def _analyser_factory():  # type: ignore[no-untyped-def]
    """The streaming arrhythmia analyser, when it is installed in this build."""
    try:
        from stream.ecg.analyser import EcgAnalyser
    except ImportError:
        log.warning("ECG arrhythmia analyser not available: ECG frames are stored and checked, not analysed")
        return None
    return EcgAnalyser


class DeferredEcg:
    """The stream core's ECG seam on the ECG lane: a frame is only stored there, analysed later from the log."""

    def push(
        self, patient_id: str, device_id: str, frame: EcgFrame
    ) -> tuple[list[Finding], EcgSummary | None, list[str]]:
        return [], None, []


class FrameAnalysis:
    """Stored frames -> findings and per-minute summaries (the frame checks and the analyser, per device)."""

    def __init__(self, analyser_factory: Any = None) -> None:
        self.tracker = EcgFrameTracker(analyser_factory)

    def push(self, row: StoredFrame) -> tuple[list[Finding], Accepted | None, list[str]]:
        _rowid, key, patient_id, device_id, device_ts, received_at, seq, fs, lead_off, samples = row
        ts = datetime.fromisoformat(device_ts)
        # Built without validation: the frame was validated when it came in, and stored as µV integers.
        frame = EcgFrame.model_construct(
            ts=ts, seq=seq, fs=float(fs), lead_off=bool(lead_off), samples_uv=samples.astype(np.float64)
        )
        findings, summary, notes = self.tracker.push(patient_id, device_id, frame)
        acc = None
        if summary is not None:
            acc = Accepted(
                reading=summary,
                patient_id=patient_id,
                device_id=device_id,
                received_at=datetime.fromisoformat(received_at),
                source="internal",
                idempotency_key=f"summary-{key}",
            )
        return findings, acc, notes


class LagWatch:
    """Enters `LAGGING` at `warn_s` behind, leaves it under half of that; logs both."""

    def __init__(self, warn_s: float) -> None:
        self.warn_s = warn_s
        self.since: datetime | None = None
        self.episodes = 0
        self.worst_s = 0.0

    def update(self, lag_s: float, now: datetime) -> None:
        if self.since is None and lag_s >= self.warn_s:
            self.since = now
            self.episodes += 1
            self.worst_s = lag_s
            log.warning(
                "ECG analysis is %.0f s behind the frames it has acknowledged: the box is past its "
                "capacity; critical readings are not delayed, arrhythmia alarms are",
                lag_s,
                extra={"lag_s": round(lag_s, 1)},
            )
        elif self.since is not None:
            self.worst_s = max(self.worst_s, lag_s)
            if lag_s < self.warn_s * LAG_CLEAR_FRACTION:
                log.warning(
                    "ECG analysis caught up (it was up to %.0f s behind for %.0f s)",
                    self.worst_s,
                    (now - self.since).total_seconds(),
                    extra={"lag_s": round(lag_s, 1)},
                )
                self.since = None

    @property
    def condition(self) -> str | None:
        return LAGGING if self.since is not None else None


class EcgAnalysis:
    """The frame log's reader in the gateway's event loop (see the module docstring)."""

    def __init__(
        self,
        storage: Path,
        on_finding: FindingHandler,
        publish_summary: ReadingPublisher,
        clock: Callable[[], datetime] = now_local,
        lag_warn_s: float = LAG_WARN_S,
        analyser_factory: Any = "default",
    ) -> None:
        self.storage = Path(storage)
        self._on_finding = on_finding
        self._publish = publish_summary
        self._clock = clock
        self._analysis = FrameAnalysis(_analyser_factory() if analyser_factory == "default" else analyser_factory)
        self._log = ReadingQueries(self.storage / READINGS_FILE)
        self._cursor_store: EcgCursor | None = None
        self.cursor = 0
        self.analysed = 0
        self.lag = LagWatch(lag_warn_s)
        self._wake = asyncio.Event()
        self._saved = -1

    def wake(self) -> None:
        """New frames are committed (called after the ECG lane's commit): look now, not at the next poll."""
        self._wake.set()

    def _open(self) -> None:
        self._cursor_store = EcgCursor(self.storage)
        saved = self._cursor_store.load()
        if IN_PROCESS in saved:
            self.cursor = saved[IN_PROCESS]
        elif saved:  # the shards' positions (another layout ran before): the least of them covers them all
            self.cursor = min(saved.values())
        else:
            # First start with a frame log reader: what is stored was analysed as it came in.
            self.cursor = self._log.ecg_log_head()
        self._saved = self.cursor
        self._cursor_store.replace({IN_PROCESS: self.cursor}, self._clock())

    def _save(self, force: bool = False) -> None:
        if self._cursor_store is not None and (force or self.cursor != self._saved):
            self._cursor_store.save(IN_PROCESS, self.cursor, self._clock())
            self._saved = self.cursor

    def lag_s(self) -> float:
        """Seconds since the oldest frame not yet analysed was received (0 when none waits)."""
        oldest = self._log.ecg_log_oldest_after(self.cursor)
        return max(0.0, (self._clock() - oldest).total_seconds()) if oldest is not None else 0.0

    def status(self) -> dict[str, Any]:
        return analysis_status(self.lag, self.lag_s(), self._log.ecg_log_head(), self.cursor, self.analysed, workers=0)

    async def run(self, stop: asyncio.Event) -> None:
        self._open()
        loop = asyncio.get_running_loop()
        next_save = next_lag = loop.time()
        try:
            while not stop.is_set():
                frames, upto = self._log.ecg_log_after(self.cursor, BATCH)
                if upto == self.cursor:
                    self._save()
                    self.lag.update(0.0, self._clock())
                    self._wake.clear()
                    await _wait_any(self._wake, stop, IDLE_POLL_S)
                    continue
                slice_end = time.perf_counter() + SLICE_S
                for row in frames:
                    if stop.is_set():
                        break
                    await self._handle(row)
                    self.cursor = row[0]
                    if time.perf_counter() >= slice_end:
                        await asyncio.sleep(0)  # the critical lane's turn
                        slice_end = time.perf_counter() + SLICE_S
                else:
                    self.cursor = upto
                now = loop.time()
                if now >= next_save:
                    self._save()
                    next_save = now + SAVE_EVERY_S
                if now >= next_lag:
                    self.lag.update(self.lag_s(), self._clock())
                    next_lag = now + LAG_CHECK_S
                await asyncio.sleep(0)
        finally:
            self._save(force=True)

    async def _handle(self, row: StoredFrame) -> None:
        try:
            findings, summary, notes = self._analysis.push(row)
        except Exception:  # one frame must never stop the analysis of every patient
            log.exception("ECG analysis failed on a frame", extra={"device_id": row[3]})
            return
        self.analysed += 1
        for note in notes:
            log.info("ecg frame: %s", note, extra={"device_id": row[3]})
        try:
            for f in findings:
                await self._on_finding(f)
            if summary is not None:
                await self._publish(summary)
        except Exception:  # as the stream core does with a reading's findings: logged, the stream goes on
            log.exception("could not hand over what an ECG frame caused", extra={"device_id": row[3]})

    async def catch_up(self, timeout_s: float) -> None:
        """Wait (bounded) until every committed frame is analysed (shutdown: what is left waits for the restart)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.wake()
        while self._cursor_store is not None and self.cursor < self._log.ecg_log_head() and loop.time() < deadline:
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self._log.close()
        if self._cursor_store is not None:
            self._cursor_store.close()
            self._cursor_store = None


async def _wait_any(event: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
