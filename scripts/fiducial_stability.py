"""How steady the QRS detector's beat times are: the largest band-passed sample against the energy centre.

    python scripts/fiducial_stability.py [--data ../shared/data/ecg/mitdb] [--floors 0,0.1] [--jobs 2]

Every MIT-BIH record is fed to ``QrsDetector`` in 1-s chunks.  Each detected QRS is matched to the
nearest reference beat (within 150 ms); for consecutive matched beats that are both
non-ventricular in the reference (``V``, ``E``, ``F`` left out: the intervals AF reads), the
interval between detections is compared with the reference interval.  Printed per group of
``stream.ecg.folds`` and per record: the 90th percentile of |difference| (ms) and the share above
40 ms, for the largest |band-pass| sample (the fiducial) and for the energy centre at each floor
(``qrs_detection.LOCATE_FLOOR``: energy below this share of the peak does not count).

This measures timing only; it chose the floor (on the rules-development and looked-at records)
for the energy centre that AF's intervals use (docs/ecg.md, AF: "Intervals between QRS energy centres").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.ecg import evaluation, folds, qrs_detection  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ecg" / "mitdb"
MATCH_S = 0.15
BIG_MS = 40.0


def _detect(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    det = qrs_detection.QrsDetector(fs)
    n = int(round(fs))
    peaks: list[int] = []
    centres: list[int] = []
    for k in range(0, len(x), n):
        peaks += det.process(x[k : k + n])
        centres += det.last_centres
    return np.array(peaks) / fs, np.array(centres) / fs


def _interval_errors(t: np.ndarray, ref_t: np.ndarray, sound: np.ndarray) -> np.ndarray:
    """|detected - reference| interval (ms) over consecutive matched beats both ``sound``."""
    j = np.clip(np.searchsorted(ref_t, t), 1, len(ref_t) - 1)
    near = np.where(np.abs(ref_t[j] - t) < np.abs(ref_t[j - 1] - t), j, j - 1)
    ok = np.abs(ref_t[near] - t) < MATCH_S
    pair = ok[1:] & ok[:-1] & (np.diff(near) == 1) & sound[near][1:] & sound[near][:-1]
    return np.abs(np.diff(t) - np.diff(ref_t[near]))[pair] * 1000.0


def record_errors(args: tuple[str, list[float]]) -> tuple[str, dict[str, np.ndarray]]:
    path, floors = args
    r = evaluation.read_record(path)
    ref_t, ref_s = evaluation.reference_beats(r)
    sound = np.array([s not in "VEF" for s in ref_s])
    out: dict[str, np.ndarray] = {}
    for floor in floors:
        qrs_detection.LOCATE_FLOOR = floor
        peaks, centres = _detect(r.signal_uv, r.fs)
        out.setdefault("largest sample", _interval_errors(peaks, ref_t, sound))
        out[f"centre, floor {floor:g}"] = _interval_errors(centres, ref_t, sound)
    return r.name, out


def _groups() -> Iterator[tuple[str, Callable[[str], bool]]]:
    yield "rules development and looked at *", lambda r: not folds.untouched(r)
    yield "untouched", folds.untouched
    yield "paced", lambda r: r in folds.PACED


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--floors", default="0,0.1", help="comma-separated LOCATE_FLOOR values")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    floors = [float(f) for f in args.floors.split(",")]
    records = sorted(r for fold in folds.MITDB_FOLDS for r in fold)
    with ProcessPoolExecutor(args.jobs) as pool:
        by = dict(pool.map(record_errors, [(str(args.data / r), floors) for r in records]))
    methods = list(by[records[0]])
    print(
        f"|interval error| between non-ventricular beats, {len(records)} MIT-BIH records: p90 (ms) / share > {BIG_MS:g} ms"
    )
    for name, keep in _groups():
        rs = [r for r in records if keep(r)]
        print(f"{name} ({len(rs)} records)")
        for m in methods:
            p90 = np.mean([np.percentile(by[r][m], 90) for r in rs if len(by[r][m])])
            big = 100.0 * np.mean([np.mean(by[r][m] > BIG_MS) for r in rs if len(by[r][m])])
            print(f"  {m:22s} mean p90 {p90:6.1f} ms   mean share > {BIG_MS:g} ms {big:5.2f} %")
    print("per record:", "  ".join(methods))
    for r in records:
        cells = [
            f"{np.percentile(e, 90):5.1f} / {100 * np.mean(e > BIG_MS):4.1f} %" if len(e) else "-"
            for e in by[r].values()
        ]
        print(f"  {r}  " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
