"""Train the 4-s window VT model (``stream/ecg/models/vtwin-v1*.npz``).

    python scripts/train_vt_window_model.py [--data ../shared/data/ecg] [--jobs 2]

Inter-patient and reproducible.  Every MIT-BIH record is streamed through the
analyser (1-s frames) with the beat model trained without its own fold, and
every vfdb record of half A (``stream.ecg.folds.VFDB_HALVES``) with the shipped
beat model; each 4-s window's features (``stream.ecg.vt_window.FEATURES``) are
labelled from the reference annotations:

* VT: the window overlaps a reference ventricular run (a ``(VT`` episode, or >= 3
  consecutive ``V`` beats in MIT-BIH) by >= 1.5 s, or holds a whole shorter run;
* not VT: it overlaps no run and no flutter/fibrillation, and ends > 1 s from any run;
* everything else (edges, VF/VFL, which the VF detector judges) is left out.

Gradient-boosted trees (scikit-learn histogram boosting, fixed seed, VT windows
weighted up to balance) learn P(VT).  Written: the shipped model (all MIT-BIH
folds + vfdb half A) and one without each MIT-BIH fold (+ vfdb half A) for
``bench/ecg_crossval.py``.  vfdb half B and the 2015 alarms are never used.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_training import check_export, git_commit  # noqa: E402  (scripts/, beside this one)

from stream.ecg import beat_model, evaluation, folds, vt_window  # noqa: E402
from stream.ecg.analyser import EcgAnalyser  # noqa: E402
from stream.ecg.flat_trees import FlatTrees  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ecg"
TREES = 200
DEPTH = 5
LEAVES = 24
LEARNING_RATE = 0.1
SEED = 20261207
MIN_OVERLAP_S = 1.5
CLEAR_OF_RUN_S = 1.0
WEIGHT_CAP = 10.0
VF_LABELS = ("(VF", "(VFL", "(VFIB")


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def windows(path: str, fold: int | None) -> tuple[str, np.ndarray, np.ndarray]:
    """(record, features, labels 1 VT / 0 not / -1 left out) of every judged window."""
    r = evaluation.read_record(path)
    model = beat_model.load_fold(fold) if fold is not None else beat_model.load()
    an = EcgAnalyser(r.fs, beat_model=model, vt_model=None)
    an.window_log = []
    n = max(1, int(round(r.fs)))
    for k in range(0, len(r.signal_uv), n):
        an.push(r.signal_uv[k : k + n], t0_s=k / r.fs)
    an.flush()
    episodes = evaluation.rhythm_episodes(r)
    runs = evaluation.ventricular_runs(r) if fold is not None else [(a, b) for lab, a, b in episodes if lab == "(VT"]
    vf = [(a, b) for lab, a, b in episodes if lab in VF_LABELS] + evaluation.vf_spans(r)
    xs, ys = [], []
    for t, x in an.window_log:
        w0 = t - vt_window.WINDOW_S
        over = [_overlap(w0, t, a, b) for a, b in runs]
        if any(o >= MIN_OVERLAP_S or (w0 <= a and b <= t) for o, (a, b) in zip(over, runs)):
            y = 1
        elif (
            not any(o > 0 for o in over)
            and not any(_overlap(w0, t, a, b) > 0 for a, b in vf)
            and all(t < a - CLEAR_OF_RUN_S or w0 > b + CLEAR_OF_RUN_S for a, b in runs)
        ):
            y = 0
        else:
            y = -1
        xs.append(x)
        ys.append(y)
    return r.name, np.array(xs), np.array(ys)


def fit(rows: dict[str, tuple[np.ndarray, np.ndarray]], records: list[str], version: str) -> vt_window.VtWindowModel:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.concatenate([rows[r][0] for r in records])
    y = np.concatenate([rows[r][1] for r in records])
    keep = y >= 0
    x, y = x[keep], y[keep]
    pos = max(1, int(y.sum()))
    w = np.where(y == 1, min(WEIGHT_CAP, (len(y) - pos) / pos), 1.0)
    clf = HistGradientBoostingClassifier(
        max_iter=TREES,
        max_depth=DEPTH,
        max_leaf_nodes=LEAVES,
        learning_rate=LEARNING_RATE,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=SEED,
    )
    clf.fit(x, y, sample_weight=w)
    model = vt_window.VtWindowModel(FlatTrees.from_sklearn(clf), version)
    check_export(lambda v: model.trees.raw(v)[0], clf, x)
    print(f"  {version}: {len(y)} windows ({int(y.sum())} VT) from {len(records)} records", file=sys.stderr)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=vt_window.MODEL_DIR)
    args = ap.parse_args(argv)
    if not (args.data / "mitdb").is_dir():
        print(f"train_vt_window_model: no mitdb/ under {args.data} (pass --data)", file=sys.stderr)
        return 2
    t0 = time.time()
    mitdb = [r for fold in folds.MITDB_FOLDS for r in fold]
    jobs = [(str(args.data / "mitdb" / r), folds.mitdb_fold(r)) for r in mitdb]
    jobs += [(str(args.data / "vfdb" / r), None) for r in folds.VFDB_HALVES["A"]]
    rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for i, (name, x, y) in enumerate(pool.map(windows, *zip(*jobs)), 1):
            rows[name] = (x, y)
            print(f"  [{i}/{len(jobs)}] {name}: {len(y)} windows, {int((y == 1).sum())} VT", file=sys.stderr)
    vfdb_a = list(folds.VFDB_HALVES["A"])
    sets = {vt_window.MODEL_NAME: mitdb + vfdb_a}
    for k, fold in enumerate(folds.MITDB_FOLDS):
        sets[f"{vt_window.MODEL_NAME}-without-fold{k}"] = [r for r in mitdb if r not in fold] + vfdb_a
    meta = {
        "trained_from": "MIT-BIH (fold beat models) + vfdb half A",
        "code": git_commit(),
        "seed": str(SEED),
        "trees": str(TREES),
        "depth": str(DEPTH),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, recs in sets.items():
        fit(rows, recs, name).save(args.out / f"{name}.npz", {**meta, "records": " ".join(recs)})
    print(f"models written to {args.out} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
