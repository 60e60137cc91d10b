"""Moved to `box/cli.py` (issue 17). Only for `tests/test_ecg_screening.py`, which the ECG work has open and
still imports `gateway.cli`; delete this file once that test imports `box.cli`."""

from box.cli import main

__all__ = ["main"]
