"""Every scenario in the library passes `vitalgate simulate --expect` against a real broker and gateway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.broker

SCENARIOS = sorted((REPO / "simulators" / "scenarios").glob("*.yaml"))


def config_for(scenario: Path, port: int, tmp: Path) -> Path:
    """One patient per scenario device, so the gateway knows every device the scenario uses."""
    sc = yaml.safe_load(scenario.read_text())
    patients = [{"id": f"p-{i:04d}", "devices": [{"id": dev, "kind": spec["kind"], **spec.get("gateway", {})}]}
                for i, (dev, spec) in enumerate(sc["devices"].items(), start=1)]
    cfg = {"clinic": "sim", "broker": {"host": "127.0.0.1", "port": port}, "storage": {"path": str(tmp / "var")},
           "patients": patients, **sc.get("gateway", {})}
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.stem for s in SCENARIOS])
def test_scenario_produces_its_expected_alerts(scenario, tmp_path, broker, gateway_process, watcher_factory):
    gw = gateway_process(config_for(scenario, broker.port, tmp_path))
    w = watcher_factory(broker.port, ["vg/sim/status"])
    w.wait_for(lambda t, b: b.get("online") is True, timeout=15)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "simulate", "--broker", f"127.0.0.1:{broker.port}", "--clinic", "sim",
         "--scenario", str(scenario), "--expect"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + gw.output()[-3000:]
    assert "expected alerts seen" in proc.stdout
    assert gw.stop() == 0


def test_expect_fails_with_a_readable_diff_when_alerts_differ(tmp_path, broker, gateway_process, watcher_factory):
    scenario = tmp_path / "wrong.yaml"
    scenario.write_text(
        "name: wrong expectation\ntime_scale: 60\ndevices:\n  glu-0001: {kind: glucose}\n"
        "timeline:\n  - {at: 0s, device: glu-0001, glucose: {mmol_l: 3.5}}\n"
        "expect:\n  - {condition: hypoglycemia_severe, tier: township, within: 3s}\n"
    )
    gateway_process(config_for(scenario, broker.port, tmp_path))
    w = watcher_factory(broker.port, ["vg/sim/status"])
    w.wait_for(lambda t, b: b.get("online") is True, timeout=15)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "simulate", "--broker", f"127.0.0.1:{broker.port}", "--clinic", "sim",
         "--scenario", str(scenario), "--expect"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "missing: hypoglycemia_severe on township (firing); saw: hypoglycemia@village:firing" in proc.stdout
