"""Every scenario in the library passes `vitalgate simulate --expect` against a real broker and gateway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simulators.scenario import load_scenario
from simulators.stack import gateway_config
from tests.support.paths import REPO

pytestmark = pytest.mark.broker

SCENARIOS = sorted((REPO / "simulators" / "scenarios").glob("*.yaml"))


# Scenarios that break infrastructure (uplink down, broker restart, gateway killed) or check the
# county side run on the simulator's own stack (`--stack`); the others against the test's broker
# and gateway, the way a developer runs them against a box.
STACK = [s for s in SCENARIOS if load_scenario(s).needs_stack]
BROKER = [s for s in SCENARIOS if s not in STACK]


def config_for(scenario: Path, port: int, tmp: Path) -> Path:
    """One patient per scenario device, so the gateway knows every device the scenario uses."""
    cfg = gateway_config(yaml.safe_load(scenario.read_text()), "sim", port, tmp / "var")
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_library_has_infrastructure_scenarios():
    kinds = {
        k
        for s in STACK
        for ev in load_scenario(s).infrastructure
        for k in ("uplink", "broker", "gateway")
        if getattr(ev, k)
    }
    assert kinds == {"uplink", "broker", "gateway"}


@pytest.mark.parametrize("scenario", STACK, ids=[s.stem for s in STACK])
def test_infrastructure_scenario_on_its_own_stack(scenario):
    proc = subprocess.run(
        [sys.executable, "-m", "box.cli", "simulate", "--stack", "--scenario", str(scenario), "--expect"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "expected alerts seen" in proc.stdout
    if load_scenario(scenario).expect_forwarded:
        line = next(x for x in proc.stdout.splitlines() if x.startswith("county: readings"))
        stored = line.split("readings ")[1].split()[0]  # "N/N"
        got, of = map(int, stored.split("/"))
        assert got == of > 0, line


def test_infrastructure_scenario_refuses_someone_elses_broker(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "box.cli",
            "simulate",
            "--broker",
            "127.0.0.1:1",
            "--scenario",
            str(STACK[0]),
            "--expect",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "run it with --stack" in proc.stdout


@pytest.mark.parametrize("scenario", BROKER, ids=[s.stem for s in BROKER])
def test_scenario_produces_its_expected_alerts(scenario, tmp_path, broker, gateway_process, watcher_factory):
    gw = gateway_process(config_for(scenario, broker.port, tmp_path))
    w = watcher_factory(broker.port, ["vg/sim/status"])
    w.wait_for(lambda t, b: b.get("online") is True, timeout=15)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "box.cli",
            "simulate",
            "--broker",
            f"127.0.0.1:{broker.port}",
            "--clinic",
            "sim",
            "--scenario",
            str(scenario),
            "--expect",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
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
        [
            sys.executable,
            "-m",
            "box.cli",
            "simulate",
            "--broker",
            f"127.0.0.1:{broker.port}",
            "--clinic",
            "sim",
            "--scenario",
            str(scenario),
            "--expect",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "missing: hypoglycemia_severe on township (firing); saw: hypoglycemia@village:firing" in proc.stdout


def test_an_alert_later_than_within_after_its_event_is_reported_late():
    from simulators.scenario import Expectation, diff_expectations

    e = Expectation.model_validate({"condition": "bp_crisis", "tier": "township", "after": "2m", "within": "5s"})
    alert = {"topic": "vg/sim/alert/township", "condition": "bp_crisis", "state": "firing"}
    t0 = 100.0  # the play started at monotonic 100 s; at time_scale 60, 2 min of scenario is 2 s of wall time
    assert diff_expectations([e], [{**alert, "_seen_at": 106.5}], t0=t0, time_scale=60) == []
    late = diff_expectations([e], [{**alert, "_seen_at": 108.0}], t0=t0, time_scale=60)
    assert late == ["missing (late): bp_crisis on township came 6.0 s after the event at 0:02:00, allowed 0:00:05"]
    county = Expectation.model_validate({"condition": "bp_crisis", "tier": "township", "where": "county"})
    assert diff_expectations([county], [alert], county_seen=[]) == [
        "missing at the county: bp_crisis on township (firing); saw: nothing"
    ]
