"""The learned ventricular-beat model: gradient-boosted trees evaluated in numpy.

Trained inter-patient by ``scripts/train_beat_model.py`` on MIT-BIH records
(folds in :mod:`stream.ecg.folds`), from the features
:class:`stream.ecg.beat_classes.BeatClassifier` computes for every beat.  The
trees are stored flat in a small ``.npz`` and walked by :class:`stream.ecg.flat_trees.FlatTrees`;
inference needs numpy only and is deterministic.

``load()`` gives the shipped model (trained on all folds); ``load_fold(k)``
the model trained without fold *k*, for cross-validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from stream.ecg.flat_trees import FlatTrees

MODEL_DIR = Path(__file__).resolve().parent / "models"
MODEL_NAME = "beat-v2"
PROBE_MS = (-60, -30, -10, 10, 30, 60, 90)  # offsets from R where the beat-minus-template difference is sampled
# the order of BeatClassifier's feature vector; a model trained on another order is refused
FEATURES: tuple[str, ...] = (
    *(f"diff_{ms}ms".replace("-", "m") for ms in PROBE_MS),
    # beat minus template / template amplitude, at offsets from R (PROBE_MS)
    "area_ratio",  # sum |beat| over sum |template|
    "peak_ms",  # where |beat| peaks, from the detected R
    "rr_local",  # RR before the beat / mean of the last 8 RRs of any beat
    "prev_rr_local",  # the RR before the previous beat, likewise
    "width_ms",  # effective QRS width, area / peak amplitude
    "rel_width",  # over the normal template's width
    "extra_ms",  # width minus the template's
    "corr",  # correlation with the normal template
    "prematurity",  # RR before the beat / median recent normal RR
    "rr_s",  # RR before the beat
    "prev_v",  # the previous beat was ventricular
    "prev_corr",  # correlation with the previous beat
    "amp_ratio",  # peak-to-peak amplitude over the template's
    "slope_ratio",  # steepest slope over the template's
    "late_energy",  # share of |y| after R + 40 ms (wide complexes carry it late)
    "polarity",  # (max + min) / peak-to-peak: which way the complex points
    "polarity_diff",  # its difference from the template's
    "cluster_v",  # V share of the beat's morphology cluster (-1 when on the template)
    "cluster_n",  # beats seen in that cluster
    "w_spread_ms",  # this patient's beat-to-beat width spread (noise level)
    "mismatch",  # this patient's usual template mismatch (noise level)
    "rule_v",  # the morphology rules' own verdict
    "rate_bpm",  # the recent normal-beat rate
)


@dataclass(frozen=True)
class BeatModel:
    """Flat gradient-boosted trees: ``raw = init + sum(value[t, leaf_t(x)])``; P(V) = sigmoid(raw)."""

    feature: np.ndarray  # (trees, nodes) int: split feature, -1 at a leaf
    threshold: np.ndarray  # (trees, nodes): go left when x[feature] <= threshold
    left: np.ndarray  # (trees, nodes) int: child indices; a leaf points to itself
    right: np.ndarray
    value: np.ndarray  # (trees, nodes): leaf contribution (learning rate applied)
    init: float
    depth: int
    threshold_v: float  # P(V) at or above which a beat is ventricular
    version: str

    def __post_init__(self) -> None:
        trees = FlatTrees(
            self.feature,
            self.threshold,
            self.left,
            self.right,
            self.value,
            self.depth,
            np.array([self.init]),
            np.zeros(self.feature.shape[0], dtype=np.intp),
        )
        object.__setattr__(self, "_trees", trees)

    def raw(self, x: np.ndarray) -> float:
        return float(self._trees.raw(x)[0])  # type: ignore[attr-defined]

    def p_ventricular(self, x: np.ndarray) -> float:
        r = self.raw(x)
        return 1.0 / (1.0 + np.exp(-r)) if r > -30 else 0.0

    def save(self, path: Path, meta: dict[str, str]) -> None:
        np.savez_compressed(
            path,
            feature=self.feature.astype(np.int16),
            threshold=self.threshold.astype(np.float32),
            left=self.left.astype(np.int16),
            right=self.right.astype(np.int16),
            value=self.value.astype(np.float32),
            init=np.float64(self.init),
            depth=np.int16(self.depth),
            threshold_v=np.float64(self.threshold_v),
            version=np.str_(self.version),
            features=np.array(FEATURES),
            meta=np.str_(repr(sorted(meta.items()))),
        )


def read(path: Path) -> BeatModel:
    with np.load(path, allow_pickle=False) as z:
        names = tuple(str(s) for s in z["features"])
        if names != FEATURES:
            raise ValueError(f"{path}: model features {names} differ from this code's {FEATURES}: retrain it")
        return BeatModel(
            feature=z["feature"].astype(np.intp),
            threshold=z["threshold"].astype(np.float64),
            left=z["left"].astype(np.intp),
            right=z["right"].astype(np.intp),
            value=z["value"].astype(np.float64),
            init=float(z["init"]),
            depth=int(z["depth"]),
            threshold_v=float(z["threshold_v"]),
            version=str(z["version"]),
        )


@cache
def load() -> BeatModel:
    """The shipped model (trained on every MIT-BIH fold)."""
    return read(MODEL_DIR / f"{MODEL_NAME}.npz")


@cache
def load_fold(k: int) -> BeatModel:
    """The model trained without MIT-BIH fold ``k`` (cross-validation only)."""
    return read(MODEL_DIR / f"{MODEL_NAME}-without-fold{k}.npz")
