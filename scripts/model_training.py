"""What the model-training scripts share (``train_beat_model``, ``train_vt_window_model``,
``train_screening_model``): the code version a model was trained at, and the check that the
numpy walk of the exported trees gives scikit-learn's own scores."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """The short commit the training ran at (recorded in the model file's metadata)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def check_export(walk: Callable[[np.ndarray], Any], clf: Any, x: np.ndarray, samples: int = 500) -> None:
    """Exit if the exported trees' raw scores differ from ``clf.decision_function`` on a sample of ``x``."""
    probe = x[:: max(1, len(x) // samples)]
    ours = np.array([walk(v) for v in probe]).reshape(len(probe), -1)
    theirs = np.asarray(clf.decision_function(probe)).reshape(len(probe), -1)
    if not np.allclose(ours, theirs, atol=1e-6):
        raise SystemExit(f"exported trees disagree with scikit-learn (max diff {np.abs(ours - theirs).max():.2e})")
