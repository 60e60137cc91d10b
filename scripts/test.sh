#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine and runs it.
# System packages: mosquitto (MQTT broker), dbus (private bus for the BLE tests),
# victoria-metrics (InfluxDB line-protocol target), chromium + chromium-driver + fonts-wqy-microhei
# (the console's browser tests), gcc (the power-cut test's LD_PRELOAD shim), systemd (systemd-analyze
# verifies the deployment kit's unit files; the package installs and configures in a container without
# running as PID 1). Python deps go into ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)   # a self-signed certificate for the HTTPS test
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
command -v cc >/dev/null 2>&1 || need+=(gcc)             # compiles tests/powercut/powercut.c (the power-cut layer)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)   # tests/integration/box/test_deploy_kit.py: systemd-analyze verify
# The doctor's console browser tests: Debian's Chromium (Playwright drives it; it never downloads one),
# and a CJK font so pages, screenshots and report plots show Chinese instead of boxes.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"; }
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# The house rules first (seconds): lint, format, types. A failure names the file and line.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
