"""Train the learned ventricular-beat model (``stream/ecg/models/beat-v2*.npz``) from the shared MIT-BIH records.

    python scripts/train_beat_model.py [--data ../shared/data/ecg/mitdb] [--jobs 2]

Inter-patient and reproducible: every MIT-BIH record is streamed through the
analyser exactly as the gateway streams it (1-s chunks), each detected beat's
feature vector (``stream.ecg.beat_model.FEATURES``) is matched to the
reference annotation within 150 ms, and gradient-boosted trees
(scikit-learn's histogram boosting, fixed seed) learn V (reference ``V``, ``E``) against every other
beat class (``F`` fusion and ``Q`` unclassifiable beats are left out).

Features depend on the classifier's own earlier decisions (the previous beat's
class, the template it keeps), so training runs in two rounds: round 1 learns
from beats as the morphology rules alone see them, round 2 from beats as the
round-1 model sees them.

It writes the shipped model (all folds) and one model without each fold of
``stream.ecg.folds.MITDB_FOLDS`` for ``bench/ecg_crossval.py``.  Needs the
``train`` extra (scikit-learn); the gateway itself needs numpy only.
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

from stream.ecg import beat_model, evaluation, folds  # noqa: E402
from stream.ecg.analyser import EcgAnalyser  # noqa: E402
from stream.ecg.flat_trees import FlatTrees  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ecg" / "mitdb"
V_SYMBOLS = frozenset("VE")
LEFT_OUT = frozenset("FQ?f")
TREES = 150
DEPTH = 5
LEAVES = 24
LEARNING_RATE = 0.1
SEED = 20261207
THRESHOLD_V = 0.5


def analysed(path: str, model_file: str | None) -> tuple[evaluation.Record, list[tuple[float, np.ndarray]]]:
    """The record, and (time, feature vector) of every beat the analyser classified, streamed in 1-s chunks."""
    r = evaluation.read_record(path)
    model = beat_model.read(Path(model_file)) if model_file else None
    an = EcgAnalyser(r.fs, beat_model=model)
    an.feature_log = []
    n = max(1, int(round(r.fs)))
    for k in range(0, len(r.signal_uv), n):
        an.push(r.signal_uv[k : k + n], t0_s=k / r.fs)
    an.flush()
    return r, an.feature_log


def matched(r: evaluation.Record, times: list[float]) -> tuple[list[int], list[int]]:
    """(indices into `times` of the beats matched to a reference beat within MATCH_S, their labels 1 = V / 0 = other);
    beats nearest an F, Q or unclassifiable reference beat are left out."""
    ref_t, ref_sym = evaluation.reference_beats(r)
    keep, ys = [], []
    for i, t in enumerate(times):
        k = int(np.searchsorted(ref_t, t))
        near = [j for j in (k - 1, k) if 0 <= j < len(ref_t)]
        if not near:
            continue
        j = min(near, key=lambda j: abs(ref_t[j] - t))
        if abs(ref_t[j] - t) > evaluation.MATCH_S or ref_sym[j] in LEFT_OUT:
            continue
        keep.append(i)
        ys.append(1 if ref_sym[j] in V_SYMBOLS else 0)
    return keep, ys


def beat_rows(path: str, model_file: str | None) -> tuple[str, np.ndarray, np.ndarray]:
    """(record, features, labels 1 = V / 0 = other) of the beats the analyser detected and the reference labels."""
    r, log = analysed(path, model_file)
    keep, ys = matched(r, [t for t, _ in log])
    return r.name, np.array([log[i][1] for i in keep]), np.array(ys)


def extract(
    records: list[str], data: Path, model_file: str | None, jobs: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with ProcessPoolExecutor(jobs) as pool:
        futs = [pool.submit(beat_rows, str(data / rec), model_file) for rec in records]
        for i, f in enumerate(futs, 1):
            name, x, y = f.result()
            out[name] = (x, y)
            print(f"  [{i}/{len(records)}] {name}: {len(y)} beats, {int(y.sum())} V", file=sys.stderr)
    return out


def classifier():  # -> HistGradientBoostingClassifier, unfitted
    """The beat model's trees as trained here (also what scripts/beat_feature_experiments.py scores)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=TREES,
        max_depth=DEPTH,
        max_leaf_nodes=LEAVES,
        learning_rate=LEARNING_RATE,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=SEED,
    )


def fit(rows: dict[str, tuple[np.ndarray, np.ndarray]], records: list[str], version: str) -> beat_model.BeatModel:
    x = np.concatenate([rows[r][0] for r in records])
    y = np.concatenate([rows[r][1] for r in records])
    clf = classifier()
    clf.fit(x, y)
    trees = FlatTrees.from_sklearn(clf)
    model = beat_model.BeatModel(
        trees.feature,
        trees.threshold,
        trees.left,
        trees.right,
        trees.value,
        float(trees.init[0]),
        trees.depth,
        THRESHOLD_V,
        version,
    )
    check_export(model.raw, clf, x)  # the numpy walk must give scikit-learn's own scores
    print(f"  {version}: {len(y)} beats ({int(y.sum())} V) from {len(records)} records", file=sys.stderr)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=beat_model.MODEL_DIR)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"train_beat_model: no MIT-BIH records at {args.data} (pass --data)", file=sys.stderr)
        return 2
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    every = [r for fold in folds.MITDB_FOLDS for r in fold]
    # which records each model learns from: all folds, and all but fold k
    sets: dict[str, list[str]] = {beat_model.MODEL_NAME: every}
    for k, fold in enumerate(folds.MITDB_FOLDS):
        sets[f"{beat_model.MODEL_NAME}-without-fold{k}"] = [r for r in every if r not in fold]
    meta = {
        "trained_from": "MIT-BIH (shared/data/ecg/mitdb)",
        "code": git_commit(),
        "seed": str(SEED),
        "trees": str(TREES),
        "depth": str(DEPTH),
        "leaves": str(LEAVES),
    }
    print("round 1: features as the morphology rules see the beats", file=sys.stderr)
    rows = extract(every, args.data, None, args.jobs)
    first = {name: fit(rows, recs, f"{name}-round1") for name, recs in sets.items()}
    tmp = args.out / "round1"
    tmp.mkdir(exist_ok=True)
    for name, model in first.items():
        model.save(tmp / f"{name}.npz", meta)
    for name, recs in sets.items():
        print(f"round 2 for {name}: features as its round-1 model sees the beats", file=sys.stderr)
        rows2 = extract(recs, args.data, str(tmp / f"{name}.npz"), args.jobs)
        model = fit(rows2, recs, name)
        model.save(args.out / f"{name}.npz", {**meta, "records": " ".join(recs)})
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    print(f"models written to {args.out} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
