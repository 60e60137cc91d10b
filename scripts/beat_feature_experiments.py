"""Candidate beat-model features, scored out-of-fold before anyone builds them into the analyser.

    python scripts/beat_feature_experiments.py [--data ../shared/data/ecg/mitdb] [--jobs 2] [--cache rows.pkl]

Streams every MIT-BIH record through the analyser with the morphology rules alone (the beat model's
first training round), keeps each detected beat's feature vector and time, matches the reference as
``train_beat_model.py`` does, and cross-validates the same trees on the 4 folds by record
(``stream.ecg.folds``) with and without each candidate:

- ``post_rr``: the RR after the beat over the mean of the last 8 RRs, and over the RR before it
  (the compensatory pause; it would delay every beat's class by one beat);
- ``sharpness``: from the raw samples, max |2nd difference| over max |1st difference| within
  +-100 ms of R, and the same before R - 10 ms (a pacing spike).

Prints V-class Se and +P, gross and for the paced (102, 104, 107, 217) and other records. Session 17's
output and what came of it: docs/ecg.md ("Tried and not kept"). Needs the ``train`` extra.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train_beat_model import (  # noqa: E402  (scripts/, beside this one: the training's own beats and trees)
    THRESHOLD_V,
    analysed,
    classifier,
    matched,
)

from stream.ecg import folds  # noqa: E402
from stream.ecg.beat_model import FEATURES  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ecg" / "mitdb"
Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]


def record_rows(path: str) -> tuple[str, Rows]:
    """(beat times, features, indices of the matched beats, labels, raw signal, fs) of one record."""
    r, log = analysed(path, None)
    ts = np.array([t for t, _ in log])
    keep, y = matched(r, ts.tolist())
    return r.name, (
        ts,
        np.array([v for _, v in log]),
        np.array(keep),
        np.array(y),
        r.signal_uv.astype(np.float64),
        float(r.fs),
    )


def post_rr(rows: Rows) -> np.ndarray:
    ts, x, *_ = rows
    col = {name: i for i, name in enumerate(FEATURES)}
    rr, rr_local = x[:, col["rr_s"]], x[:, col["rr_local"]]
    mean8 = np.divide(rr, rr_local, out=np.full_like(rr, np.nan), where=rr_local > 0)
    after = np.append(np.diff(ts), np.nan)  # nan for the last beat: the trees route missing values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.column_stack((after / mean8, np.where(rr > 0, after / rr, np.nan)))


def sharpness(rows: Rows) -> np.ndarray:
    ts, _, _, _, sig, fs = rows
    span, gap = int(round(0.10 * fs)), int(round(0.01 * fs))
    out = np.zeros((len(ts), 2))
    for k, t in enumerate(ts):
        i = int(round(t * fs))
        w = sig[max(0, i - span) : i + span]
        if len(w) < 5:
            continue
        d1 = float(np.abs(np.diff(w)).max()) or 1.0
        out[k, 0] = float(np.abs(np.diff(w, 2)).max()) / d1
        pre = sig[max(0, i - span) : max(1, i - gap)]
        out[k, 1] = float(np.abs(np.diff(pre, 2)).max()) / d1 if len(pre) > 2 else 0.0
    return out


CANDIDATES = {"baseline": [], "post_rr": [post_rr], "sharpness": [sharpness]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None, help="keep the extracted rows here (pickle)")
    args = ap.parse_args(argv)
    records = [r for fold in folds.MITDB_FOLDS for r in fold]
    if args.cache and args.cache.exists():
        data: dict[str, Rows] = pickle.loads(args.cache.read_bytes())
    else:
        data = {}
        with ProcessPoolExecutor(args.jobs) as pool:
            for i, (name, rows) in enumerate(pool.map(record_rows, [str(args.data / r) for r in records]), 1):
                data[name] = rows
                print(f"  [{i}/{len(records)}] {name}", file=sys.stderr)
        if args.cache:
            args.cache.write_bytes(pickle.dumps(data))
    for cand, extra in CANDIDATES.items():

        def table(rec: str, extra: list = extra) -> tuple[np.ndarray, np.ndarray]:
            rows = data[rec]
            x = np.hstack([rows[1], *(f(rows) for f in extra)])
            return x[rows[2]], rows[3]

        counts = {"all": np.zeros(3, int), "paced": np.zeros(3, int), "other": np.zeros(3, int)}
        for fold in folds.MITDB_FOLDS:
            train = [r for r in records if r not in fold]
            xs, ys = zip(*(table(r) for r in train), strict=True)
            clf = classifier().fit(np.vstack(xs), np.concatenate(ys))
            for rec in fold:
                x, y = table(rec)
                v = clf.predict_proba(x)[:, 1] >= THRESHOLD_V
                c = np.array([(v & (y == 1)).sum(), (~v & (y == 1)).sum(), (v & (y == 0)).sum()])
                counts["all"] += c
                counts["paced" if rec in folds.PACED else "other"] += c
        for group, (tp, fn, fp) in counts.items():
            print(
                f"{cand:<10} {group:<6} V Se {100 * tp / max(1, tp + fn):6.2f}  +P {100 * tp / max(1, tp + fp):6.2f}"
                f"  (TP {tp} FN {fn} FP {fp})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
