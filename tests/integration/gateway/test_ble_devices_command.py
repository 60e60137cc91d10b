"""`vitalgate ble-devices --config`: the config's `ble:` devices as virtual peripherals on a private
dbus-daemon with the mock BlueZ, and the line that points `vitalgate run` at that bus."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.ble

CONFIG = """\
clinic: c1
broker: {host: 127.0.0.1, port: 1883}
storage: {path: %s}
patients:
  - id: p-0001
    devices:
      - {id: bp-0001, kind: blood_pressure, ble: {name: "BP-Cuff", profile: blood_pressure}}
      - {id: ecg-0001, kind: ecg, ble: {address: "C0:26:DA:01:02:03", profile: vendor_ecg}}
"""


def _run(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "box.cli", "ble-devices", "--config", str(cfg), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_lists_the_config_ble_devices_and_how_to_run_the_gateway_on_their_bus(tmp_path: Path) -> None:
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (scripts/test.sh installs dbus)")
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(CONFIG % (tmp_path / "var"))
    done = _run(cfg, "--duration", "1s", "--dropouts", "off")
    assert done.returncode == 0, done.stderr
    assert "bp-0001" in done.stdout and "BloodPressureCuff" in done.stdout
    assert "C0:26:DA:01:02:03" in done.stdout and "VendorEcgPatch" in done.stdout
    assert "DBUS_SYSTEM_BUS_ADDRESS='unix:path=" in done.stdout and f"vitalgate run --config {cfg}" in done.stdout


def test_a_config_without_ble_devices_says_so(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        CONFIG.split("      - {id: bp-0001")[0] % (tmp_path / "var") + "      - {id: bp-0001, kind: blood_pressure}\n"
    )
    done = _run(cfg, "--duration", "1s")
    assert done.returncode == 2 and "no device has a `ble:` section" in done.stderr
