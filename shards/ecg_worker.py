"""One ECG analysis worker process: shard K of N of the patients, read from the frame log.

    python -m shards.ecg_worker --storage DIR --shard K --of N --start ROWID [--log-level INFO] [--nice 5]

Started and restarted by the gateway (`ecg_shards.py`). It reads the frames
committed after ROWID from `readings.db` (read-only; WAL readers never block
the gateway's writes), keeps those of its patients (`ShardOf`: a stable hash
of the patient id, so a patient's frames always go to the same worker, in
commit order), analyses them, and writes one JSON line per result to stdout:

* `{"f": finding}`: a finding (`stream.models.Finding`, as JSON),
* `{"s": summary}`: a per-minute summary (`Accepted` of an `EcgSummary`),
* `{"l": [level, message, fields]}`: a log record, for the gateway to log,
* `{"p": rowid, "a": n}`: everything up to `rowid` is analysed (`n` frames
  of this worker's since the last such line), and every result for those
  frames is on the lines before this one.

The gateway handles the results, then takes the position: a worker killed at
any moment costs at most the frames after its last position line, which its
successor analyses again from there. It exits when stdin closes (the gateway
stopped or died).
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import os
import select
import signal
import sys
import zlib
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from shards.ecg_analysis import BATCH, FrameAnalysis, _analyser_factory
from stream.store import FILE_NAME as READINGS_FILE
from stream.store import ReadingQueries

IDLE_POLL_S = 0.05  # with nothing to analyse, look at the log this often

log = logging.getLogger("vitalgate.ecg_worker")

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class ShardOf:
    """The patients of shard `k` of `n`: crc32 of the patient id, so every process agrees."""

    def __init__(self, k: int, n: int) -> None:
        if not 0 <= k < n:
            raise ValueError(f"shard {k} of {n}")
        self.k, self.n = k, n
        self._mine: dict[object, bool] = {}

    def __contains__(self, patient_id: object) -> bool:
        mine = self._mine.get(patient_id)
        if mine is None:
            mine = self._mine[patient_id] = zlib.crc32(str(patient_id).encode()) % self.n == self.k
        return mine


def _plain(v: Any) -> Any:
    """What json cannot write as it is: times, enums, numpy scalars and arrays (an analyser's evidence)."""
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (np.generic, np.ndarray)):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} is not JSON")


class _Lines:
    """The result stream to the gateway: one JSON object a line."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def write(self, obj: dict[str, Any]) -> None:
        self._out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_plain).encode() + b"\n")

    def flush(self) -> None:
        self._out.flush()


class _ToGateway(logging.Handler):
    """Log records go to the gateway, which logs them in its own format (one log for the box)."""

    def __init__(self, lines: _Lines, shard: int) -> None:
        super().__init__()
        self._lines, self._shard = lines, shard

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + logging.Formatter().formatException(record.exc_info)
            fields = {k: v for k, v in record.__dict__.items() if k not in _STD and isinstance(v, (str, int, float))}
            self._lines.write({"l": [record.levelno, msg, {**fields, "shard": self._shard}]})
        except Exception:  # logging must never stop the analysis
            pass


def _stdin_closed(timeout: float) -> bool:
    """True once the gateway has closed our stdin (it stopped, or died)."""
    fd = sys.stdin.fileno()
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        return False
    return os.read(fd, 4096) == b""


def run(storage: Path, k: int, n: int, start: int, lines: _Lines) -> None:
    frames_log = ReadingQueries(storage / READINGS_FILE)
    shard = ShardOf(k, n)
    analysis = FrameAnalysis(_analyser_factory())
    cursor = start
    try:
        while True:
            frames, upto = frames_log.ecg_log_after(cursor, BATCH, patients=shard)
            if upto == cursor:
                lines.flush()
                if _stdin_closed(IDLE_POLL_S):
                    return
                continue
            done = 0
            for row in frames:
                try:
                    findings, summary, notes = analysis.push(row)
                except Exception:  # one frame must never stop the analysis of the shard's patients
                    log.exception("ECG analysis failed on a frame", extra={"device_id": row[3]})
                    continue
                done += 1
                for note in notes:
                    log.info("ecg frame: %s", note, extra={"device_id": row[3]})
                for f in findings:
                    lines.write(
                        {"f": f.model_dump()}
                    )  # (json's default= writes what pydantic's json mode would refuse)
                if summary is not None:
                    lines.write({"s": summary.model_dump()})
            cursor = upto
            lines.write({"p": cursor, "a": done})
            lines.flush()
            if _stdin_closed(0):
                return
    finally:
        frames_log.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--storage", type=Path, required=True)
    ap.add_argument("--shard", type=int, required=True)
    ap.add_argument("--of", type=int, required=True)
    ap.add_argument("--start", type=int, required=True)
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by this much")
    args = ap.parse_args(argv)
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError:
            pass
    lines = _Lines(sys.stdout.buffer)
    root = logging.getLogger()
    root.handlers[:] = [_ToGateway(lines, args.shard)]
    root.setLevel(args.log_level)
    try:
        run(args.storage, args.shard, args.of, args.start, lines)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the gateway, which then closes our stdin
    sys.exit(main())
