"""What durable commits cost: SQLite WAL with synchronous=NORMAL against FULL, one commit per tick.

    python bench/sqlite_sync.py [--dir ./var] [--ticks 2000] [--per-tick 20]

The reading store commits once per event-loop tick (every reading of the tick in one transaction).
FULL fsyncs the WAL at each commit, so a power cut cannot roll back a reading whose broker message
was already acknowledged; NORMAL syncs only at checkpoints.  Both are measured in the same run, on
the file system of ``--dir`` (the box's storage path: fsync cost is the disk's), alternating.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import doc_block  # noqa: E402  (bench/, beside this one: --doc)

from stream.store import open_sqlite  # noqa: E402


def run(directory: Path, durable: bool, ticks: int, per_tick: int) -> float:
    """Seconds per commit of ``per_tick`` readings."""
    with tempfile.TemporaryDirectory(dir=directory) as d:
        db = open_sqlite(Path(d) / "bench.db", durable=durable)
        db.execute("CREATE TABLE r (k TEXT PRIMARY KEY, patient TEXT, ts TEXT, body TEXT)")
        body = '{"kind":"blood_pressure","systolic":132,"diastolic":84,"pulse":71}'
        t0 = time.perf_counter()
        n = 0
        for _ in range(ticks):
            db.execute("BEGIN")
            for _ in range(per_tick):
                db.execute("INSERT INTO r VALUES (?,?,?,?)", (f"k{n}", "p-0001", "2026-12-07T08:00:00+08:00", body))
                n += 1
            db.execute("COMMIT")
        spent = time.perf_counter() - t0
        db.close()
    return spent / ticks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=ROOT / "var", help="where the box keeps its storage")
    ap.add_argument("--ticks", type=int, default=2000)
    ap.add_argument("--per-tick", type=int, default=20, help="readings per commit")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--doc", action="store_true", help="also write the output into docs/performance.md")
    a = ap.parse_args()
    with doc_block.captured(a.doc, "sqlite_sync", "python bench/sqlite_sync.py"):
        return _run(a)


def _run(a: argparse.Namespace) -> int:
    a.dir.mkdir(parents=True, exist_ok=True)
    normal, full = [], []
    for _ in range(a.rounds):  # alternate, so machine noise hits both alike
        normal.append(run(a.dir, False, a.ticks, a.per_tick))
        full.append(run(a.dir, True, a.ticks, a.per_tick))
    n, f = statistics.median(normal), statistics.median(full)
    print(f"storage {a.dir.resolve()}, {a.ticks} commits of {a.per_tick} readings, median of {a.rounds}")
    print(f"{'synchronous':<12} {'µs/commit':>10} {'commits/s':>10} {'readings/s':>11}")
    for name, v in (("NORMAL", n), ("FULL", f)):
        print(f"{name:<12} {v * 1e6:>10.0f} {1 / v:>10.0f} {a.per_tick / v:>11.0f}")
    print(f"FULL / NORMAL: {f / n:.1f}x the time per commit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
