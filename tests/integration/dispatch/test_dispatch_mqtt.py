"""Dispatcher end to end through a real Mosquitto and `vitalgate run`: the routing tree, the emergency
audience, repeats, MQTT acks, and a SIGKILL in the middle of an escalation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.support.dispatch import CLINIC, glucose, now, write_config

pytestmark = pytest.mark.broker

TREE = """\
routing:
  routes:
    - name: frail patients' lows go to the township
      match: {condition: hypoglycemia, labels: {frail: true}}
      tier: township
"""


def online(w) -> None:
    w.wait_for(lambda t, b: t.endswith("/status") and b.get("online") is True, timeout=20)


def test_routing_tree_sends_by_patient_label_and_routes_test_agrees(tmp_path, broker, gateway_process, watcher_factory):
    cfg = write_config(tmp_path, broker.port, TREE)
    gateway_process(cfg)
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/#"])
    online(w)
    t = now()
    w.publish(f"vg/{CLINIC}/device/glu-0001/reading", glucose(t, 3.5, 1))
    w.publish(f"vg/{CLINIC}/device/glu-0002/reading", glucose(t, 3.5, 1))
    _, frail = w.wait_for(lambda t_, b: b.get("condition") == "hypoglycemia" and b.get("patient_id") == "p-0001")
    _, other = w.wait_for(lambda t_, b: b.get("condition") == "hypoglycemia" and b.get("patient_id") == "p-0002")
    assert frail["tier"] == "township" and other["tier"] == "village"
    topics = {(t_, b["patient_id"]) for t_, b in w.json(f"vg/{CLINIC}/alert/")}
    assert topics == {(f"vg/{CLINIC}/alert/township", "p-0001"), (f"vg/{CLINIC}/alert/village", "p-0002")}

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "box.cli",
            "routes",
            "test",
            "--condition",
            "hypoglycemia",
            "--patient",
            "p-0001",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "frail patients' lows go to the township" in out.stdout
    assert "opens at: township, severity medium" in out.stdout
    assert f"vg/{CLINIC}/alert/township" in out.stdout


def test_emergency_tells_county_and_village_doctor_repeats_and_stops_on_ack(
    tmp_path, broker, gateway_process, watcher_factory
):
    cfg = write_config(
        tmp_path,
        broker.port,
        escalation_more=(
            "  repeat_interval: 2s\n  conditions:\n    hypoglycemia_severe: {at: township, timeout: 2s, to: emergency}\n"
        ),
    )
    gw = gateway_process(cfg)
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/#"])
    online(w)
    w.publish(f"vg/{CLINIC}/device/glu-0001/reading", glucose(now(), 2.6, 1))
    _, first = w.wait_for(lambda t, b: t.endswith("/alert/township") and b.get("condition") == "hypoglycemia_severe")
    aid = first["alert_id"]

    def firing(tier: str) -> list[dict]:
        return [
            b for t, b in w.json(f"vg/{CLINIC}/alert/{tier}") if b.get("alert_id") == aid and b["state"] == "firing"
        ]

    for tier in ("emergency", "county", "village"):
        _, esc = w.wait_for(lambda t, b: t.endswith(f"/alert/{tier}") and b.get("alert_id") == aid, timeout=10)
        assert (esc["tier"], esc["escalated_from"], esc["state"]) == ("emergency", "township", "firing")
    # Nobody acknowledges: the 120 bridge is told again every repeat_interval.
    deadline = time.monotonic() + 10
    # (the repeats to each tier are separate messages: wait for both, not for the first to arrive)
    while (len(firing("emergency")) < 2 or len(firing("village")) < 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(firing("emergency")) >= 2 and len(firing("village")) >= 2
    w.publish(f"vg/{CLINIC}/ack", json.dumps({"alert_id": aid, "by": "120-desk"}))
    for tier in ("township", "emergency", "county", "village"):
        w.wait_for(
            lambda t, b: (
                t.endswith(f"/alert/{tier}")
                and b.get("alert_id") == aid
                and b["state"] == "acknowledged"
                and b["acknowledged_by"] == "120-desk"
            )
        )
    n = len(firing("emergency"))
    time.sleep(3)
    assert len(firing("emergency")) == n, "an acknowledged alert was repeated"
    assert gw.stop() == 0


def test_sigkill_in_the_middle_of_an_escalation_keeps_the_due_time_and_raises_nothing_twice(
    tmp_path, broker, gateway_process, watcher_factory
):
    # village 2 s, then township 8 s: county is due 10 s after the alert opened.
    cfg = write_config(tmp_path, broker.port, escalation="{village: 2s, township: 8s, county: 10m}")
    gw = gateway_process(cfg)
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/#"])
    online(w)
    w.publish(f"vg/{CLINIC}/device/glu-0002/reading", glucose(now(), 3.5, 1))
    _, first = w.wait_for(lambda t, b: t.endswith("/alert/village") and b.get("condition") == "hypoglycemia")
    opened = time.monotonic()
    aid = first["alert_id"]
    w.wait_for(lambda t, b: t.endswith("/alert/township") and b.get("alert_id") == aid, timeout=10)
    assert gw.stop(signal.SIGKILL) == -signal.SIGKILL  # mid-ladder: township told, county pending
    killed_at = time.monotonic()
    time.sleep(3.0)  # the box is down a while: a timer re-armed at restart would now be clearly late

    gw2 = gateway_process(cfg)
    w.wait_for(
        lambda t, b: t.endswith("/status") and b.get("online") is True and b.get("started_at", "") > first["opened_at"],
        timeout=20,
    )
    restarted = time.monotonic()
    _, county = w.wait_for(lambda t, b: t.endswith("/alert/county") and b.get("alert_id") == aid, timeout=15)
    at = time.monotonic() - opened
    assert county["escalated_from"] == "township" and county["state"] == "firing"
    # The stored due time (10 s after opening) survived; a re-armed timer would say restart + 8 s.
    assert 9.5 <= at, at
    assert time.monotonic() < restarted + 8 - 1.5, (at, restarted - killed_at)
    time.sleep(1.0)
    per_tier: dict[str, int] = {}
    for t, b in w.json(f"vg/{CLINIC}/alert/"):
        if b.get("condition") == "hypoglycemia" and b["state"] == "firing":
            assert b["alert_id"] == aid, "a second alert was raised for the same condition"
            per_tier[t.rsplit("/", 1)[1]] = per_tier.get(t.rsplit("/", 1)[1], 0) + 1
    assert per_tier == {"village": 1, "township": 1, "county": 1}, per_tier
    assert gw2.stop() == 0
