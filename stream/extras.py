"""Optional dependencies a clinic box does not install: the field's ECG record reader (`wfdb`, extra
`records`: ecg-eval, record replay, the benches) and the demo's embedded broker (`amqtt`, extra `demo`).
Importing one through `need` turns a bare ModuleNotFoundError into what to install."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def need(module: str, extra: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0]:
            raise  # the package is there but something it imports is broken: show that, not a hint
        raise MissingExtra(
            f"{purpose} needs the Python package {module.split('.')[0]!r}, which a clinic box does not install: "
            f"pip install 'vitalgate[{extra}]' (or .[{extra}] in a checkout)"
        ) from exc
