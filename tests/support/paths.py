"""Where the repository and the ECG data are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ECG_DATA = REPO.parent / "shared" / "data" / "ecg"  # the full PhysioNet development set, beside the clone
ECG_SLICES = REPO / "tests" / "data" / "ecg"  # small real slices of it that ship with the repo


def ecg_data() -> Path:
    """The full ECG data set: ``../shared/data/ecg``, or ``$VITALGATE_ECG_DATA`` when set.

    When it is missing the calling test is failed if ``CI`` is set (CI has the data set beside
    the clone, so a missing one is a broken setup, not a green run) and skipped, with the
    reason, otherwise: a bare clone still runs the slices in ``tests/data/ecg``.
    """
    data = Path(os.environ.get("VITALGATE_ECG_DATA") or ECG_DATA)
    if (data / "mitdb" / "100.hea").exists():
        return data
    msg = (
        f"ECG data set missing: {data} (see tests/data/ecg/README.md); the tests on the slices "
        f"in tests/data/ecg still run"
    )
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(msg + "; CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(msg)
