"""Could a learned gate drop the QRS detector's false beats in electrode-motion noise?  (An experiment.)

    python scripts/noise_gate_experiments.py [--data ../shared/data/ecg/mitdb] [--jobs 2]

Every MIT-BIH record is streamed through the analyser (each with its fold's beat model) clean,
with nstdb's electrode-motion noise at 6 dB and with its muscle noise at 6 dB
(``simulators/ecg_stress.py``, nst's schedule and SNR).  Each detection the beat classifier
describes becomes a row: its 31 beat features, its frame's quality (noisy flag, SQI), the QRS
detector's noise ratio, the amplitude ratio, template match, reliability and RR; label 1 when a
reference beat lies within 150 ms, 0 for a false detection.

Gradient-boosted trees learn true beat against false detection, validated twice over:

* by record: fold k's records are scored by trees trained on the other three folds;
* by noise: every record carries the same electrode-motion recording at the same times, so the
  trees learn from the 1st, 3rd, 5th and 7th noisy segments only and are scored on the 2nd, 4th
  and 6th (noise they never saw) and on the clean parts.

Printed for thresholds on P(true beat): the false detections kept and the true beats lost, in
the test segments of the noisy records and on the clean records.  ``--where noisy`` (or
``sqi<0.5``) lets the gate judge only detections in frames the signal-quality check calls noisy
(or whose SQI is under 0.5); the others are kept.  Needs the ``train`` extra.
The figures are in docs/ecg.md ("Noise stress"); nothing here changes the analyser.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulators.ecg_stress import noise_segment, variant  # noqa: E402
from stream.ecg import beat_model, evaluation, folds  # noqa: E402
from stream.ecg.analyser import EcgAnalyser  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ecg" / "mitdb"
VARIANTS = ("native", "em6", "ma6")
LEARNT_SEGMENTS = (0, 2, 4, 6)  # the noisy segments (0 = the first) the trees may learn from
THRESHOLDS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)
NOISY_COL, SQI_COL = 31, 32  # after the 31 beat features: the frame's noisy flag, its SQI

Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # features, labels (1 = true beat), times


def rows(args: tuple[str, str, str]) -> tuple[str, str, Rows]:
    """The detections of one record under one noise variant."""
    path, name, var = args
    r = evaluation.read_record(path)
    if var != "native":
        r = variant(r, var)
    an = EcgAnalyser(r.fs, beat_model=beat_model.load_fold(folds.mitdb_fold(r.name)))
    an.feature_log = []
    extra: dict[float, tuple[float, ...]] = {}
    on_beat = an._on_beat

    def logged(b: tuple, current: object) -> list:
        fq = an._frame_quality(b[0], current)  # type: ignore[arg-type]
        rr = b[3] if b[3] is not None else 1.0
        amp = b[7] if b[7] is not None else 1.0
        extra[b[1]] = (float(fq.noisy), fq.sqi, b[11], amp, float(b[4]), float(b[5]), rr)
        return on_beat(b, current)  # type: ignore[arg-type]

    an._on_beat = logged  # type: ignore[method-assign]
    n = int(round(r.fs))
    for k in range(0, len(r.signal_uv), n):
        an.push(r.signal_uv[k : k + n], t0_s=k / r.fs)
    an.flush()
    ref_t, _ = evaluation.reference_beats(r)
    xs, ys, ts = [], [], []
    for t, x in an.feature_log:
        if t not in extra:
            continue
        k = int(np.searchsorted(ref_t, t))
        d = min(abs(ref_t[j] - t) for j in (k - 1, k) if 0 <= j < len(ref_t))
        xs.append(np.concatenate([x, extra[t]]))
        ys.append(1 if d <= evaluation.MATCH_S else 0)
        ts.append(t)
    return name, var, (np.array(xs), np.array(ys), np.array(ts))


def main(argv: list[str] | None = None) -> int:
    from sklearn.ensemble import HistGradientBoostingClassifier

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--where", choices=("all", "noisy", "sqi<0.5"), default="all", help="which detections the gate judges"
    )
    args = ap.parse_args(argv)
    records = sorted(r for fold in folds.MITDB_FOLDS for r in fold)
    data: dict[tuple[str, str], Rows] = {}
    tasks = [(str(args.data / rec), rec, v) for v in VARIANTS for rec in records]
    with ProcessPoolExecutor(args.jobs) as pool:
        for i, (name, var, got) in enumerate(pool.map(rows, tasks), 1):
            data[(name, var)] = got
            if i % 20 == 0 or i == len(tasks):
                print(f"  [{i}/{len(tasks)}] records analysed", file=sys.stderr)
    scored: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for fold in folds.MITDB_FOLDS:
        xs, ys = [], []
        for (name, var), (x, y, t) in data.items():
            if name in fold or not len(y):
                continue
            keep = np.ones(len(y), bool) if var == "native" else np.isin(noise_segment(t), (-1, *LEARNT_SEGMENTS))
            xs.append(x[keep])
            ys.append(y[keep])
        trees = HistGradientBoostingClassifier(
            max_iter=150, max_depth=5, max_leaf_nodes=24, learning_rate=0.1, random_state=1
        ).fit(np.concatenate(xs), np.concatenate(ys))
        for (name, var), (x, y, t) in data.items():
            if name not in fold or not len(y):
                continue
            test = np.ones(len(y), bool) if var == "native" else ~np.isin(noise_segment(t), LEARNT_SEGMENTS)
            judged = {
                "all": np.ones(int(test.sum()), bool),
                "noisy": x[test][:, NOISY_COL] > 0.5,
                "sqi<0.5": x[test][:, SQI_COL] < 0.5,
            }[args.where]
            scored[(name, var)] = (trees.predict_proba(x[test])[:, 1], y[test], judged)
    for var in VARIANTS:
        print(f"{var}: test detections (folds left out; noisy segments never learnt from), gate judges {args.where}")
        for thr in THRESHOLDS:
            tp = fp = lost = 0
            for (_, v), (p, y, judged) in scored.items():
                if v == var:
                    kept = (p >= thr) | ~judged
                    tp += int((kept & (y == 1)).sum())
                    fp += int((kept & (y == 0)).sum())
                    lost += int((~kept & (y == 1)).sum())
            print(
                f"  P(true) >= {thr:.2f}: +P {100 * tp / max(1, tp + fp):6.2f} %  false kept {fp:6d}  "
                f"true lost {lost:5d} ({100 * lost / max(1, tp + lost):.2f} %)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
