"""Gradient-boosted trees stored flat and walked in numpy (the shipped models' inference).

A model trained with scikit-learn's histogram boosting is exported as arrays of
shape (trees, nodes): split feature, threshold, left/right child and leaf value.
A leaf points to itself, so every tree is walked the same fixed number of steps,
all trees at once; inference needs numpy only and is deterministic.  Features
are never NaN here (the feature code fills a defined value), so scikit-learn's
missing-value routing is not needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class FlatTrees:
    """``raw[k] = init[k] + sum of the leaf values of the trees of output k``."""

    def __init__(
        self,
        feature: np.ndarray,
        threshold: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        value: np.ndarray,
        depth: int,
        init: np.ndarray,
        output: np.ndarray,
    ) -> None:
        self.feature = feature.astype(np.intp)
        self.threshold = threshold.astype(np.float64)
        self.left = left.astype(np.intp)
        self.right = right.astype(np.intp)
        self.value = value.astype(np.float64)
        self.depth = int(depth)
        self.init = np.asarray(init, dtype=np.float64).reshape(-1)
        self.output = np.asarray(output, dtype=np.intp)  # (trees,): which output each tree adds to
        # the walk runs on flat arrays: a node is tree * nodes + index, children point into them
        trees, nodes = self.feature.shape
        base = (np.arange(trees) * nodes)[:, None]
        self._root = np.arange(trees) * nodes
        self._feat = np.maximum(self.feature, 0).ravel()  # leaves read feature 0; both ways lead back to them
        self._thr = self.threshold.ravel()
        self._left = (self.left + base).ravel()
        self._right = (self.right + base).ravel()
        self._value = self.value.ravel()

    def raw(self, x: np.ndarray) -> np.ndarray:
        node = self._root
        for _ in range(self.depth):
            node = np.where(x[self._feat[node]] <= self._thr[node], self._left[node], self._right[node])
        return self.init + np.bincount(self.output, weights=self._value[node], minlength=self.init.size)

    def arrays(self) -> dict[str, Any]:
        """For ``np.savez``: compact dtypes, read back by :meth:`from_arrays`."""
        return {
            "feature": self.feature.astype(np.int16),
            "threshold": self.threshold.astype(np.float32),
            "left": self.left.astype(np.int16),
            "right": self.right.astype(np.int16),
            "value": self.value.astype(np.float32),
            "depth": np.int16(self.depth),
            "init": self.init,
            "output": self.output.astype(np.int16),
        }

    @classmethod
    def from_arrays(cls, z: Any) -> FlatTrees:
        return cls(
            z["feature"], z["threshold"], z["left"], z["right"], z["value"], int(z["depth"]), z["init"], z["output"]
        )

    @classmethod
    def from_sklearn(cls, clf: Any) -> FlatTrees:
        """Export a fitted ``HistGradientBoostingClassifier`` (binary or multi-class, numeric features)."""
        trees, outputs = [], []
        for per_iteration in clf._predictors:
            for k, predictor in enumerate(per_iteration):
                trees.append(predictor.nodes)
                outputs.append(k)
        nodes = max(len(t) for t in trees)
        shape = (len(trees), nodes)
        feat = np.full(shape, -1, dtype=np.intp)
        thr = np.zeros(shape)
        left = np.tile(np.arange(nodes), (shape[0], 1))
        right = left.copy()
        value = np.zeros(shape)
        for t, nd in enumerate(trees):
            m = len(nd)
            inner = nd["is_leaf"] == 0
            feat[t, :m] = np.where(inner, nd["feature_idx"], -1)
            thr[t, :m] = np.where(inner, nd["num_threshold"], 0.0)
            left[t, :m] = np.where(inner, nd["left"], np.arange(m))
            right[t, :m] = np.where(inner, nd["right"], np.arange(m))
            value[t, :m] = np.where(inner, 0.0, nd["value"])  # leaf values carry the learning rate already
        depth = int(max(nd["depth"].max() for nd in trees))
        return cls(feat, thr, left, right, value, depth, np.ravel(clf._baseline_prediction), np.array(outputs))
