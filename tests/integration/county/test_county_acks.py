"""Acknowledging from the county: an ack on the county broker stops the clinic's ladder, and counts once.

Two real Mosquittos (the clinic's and the county's) and `vitalgate run` with an `uplink:`.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.support.store_forward import (
    CLINIC,
    DevicePublisher,
    PersistentMosquitto,
    SessionWatcher,
    glucose,
    ts_at,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.broker


def _events(storage: Path, alert_id: str) -> list[str]:
    """The alert's audit trail as the gateway stored it (event names, in order)."""
    from dispatch.alert_store import AlertQueries

    q = AlertQueries(storage / "alerts.db")
    try:
        (alert,) = [a for a in q.with_transitions() if a["alert_id"] == alert_id]
        return [t["what"] for t in alert["transitions"]]
    finally:
        q.close()


def _firing(watcher: SessionWatcher) -> dict | None:
    for _, p, _ in watcher.alerts():
        a = json.loads(p)
        if a["condition"] == "hypoglycemia_severe" and a["state"] == "firing":
            return a
    return None


def _states(watcher: SessionWatcher, alert_id: str) -> list[str]:
    return [json.loads(p)["state"] for _, p, _ in watcher.alerts() if json.loads(p)["alert_id"] == alert_id]


def test_an_ack_from_the_county_stops_the_ladder_and_duplicates_count_once(tmp_path, gateway_process):
    local = PersistentMosquitto(tmp_path, "local")
    county = PersistentMosquitto(tmp_path, "county")
    try:
        cfg = write_config(tmp_path, local.port, county.port, patients=1)
        clinic_w = SessionWatcher(local.port, [f"vg/{CLINIC}/alert/#"], "clinic-watch")
        county_w = SessionWatcher(county.port, [f"vg/{CLINIC}/#"], "county-watch")
        gw = gateway_process(cfg)
        wait_until(lambda: any(t.endswith("/status") for t, _, _ in county_w.snapshot()), 20, "the gateway online")
        devices = DevicePublisher(local.port)
        devices.publish(f"vg/{CLINIC}/device/glu-0001/reading", glucose(1, ts_at(1), 2.2))
        alert = wait_until(lambda: _firing(county_w), 20, "the severe hypoglycaemia alert at the county")

        county_ack = DevicePublisher(county.port, name="county-desk")
        body = json.dumps({"alert_id": alert["alert_id"], "by": "county-desk-1"})
        county_ack.publish(f"vg/{CLINIC}/ack", body)
        wait_until(
            lambda: "acknowledged" in _states(clinic_w, alert["alert_id"]),
            20,
            "the acknowledgement on the clinic's alert topic",
        )
        # the same ack again from the county, and once more by the clinic's broker: nothing changes
        county_ack.publish(f"vg/{CLINIC}/ack", body)
        devices.publish(f"vg/{CLINIC}/ack", body)
        wait_until(
            lambda: "acknowledged" in _states(county_w, alert["alert_id"]),
            20,
            "the acknowledgement uplinked to the county",
        )
        assert gw.stop(signal.SIGTERM) == 0
        trail = _events(tmp_path / "var", alert["alert_id"])
        assert trail.count("acknowledged") == 1, trail
        assert "escalated" not in trail, trail
        assert _states(clinic_w, alert["alert_id"]).count("acknowledged") == 1
        for w in (clinic_w, county_w, devices, county_ack):
            w.close()
    finally:
        local.stop()
        county.stop()


def test_an_ack_sent_while_the_clinic_was_offline_arrives_when_it_is_back(tmp_path, gateway_process):
    local = PersistentMosquitto(tmp_path, "local")
    county = PersistentMosquitto(tmp_path, "county")
    try:
        cfg = write_config(tmp_path, local.port, county.port, patients=1)
        county_w = SessionWatcher(county.port, [f"vg/{CLINIC}/#"], "county-watch")
        gw = gateway_process(cfg)
        devices = DevicePublisher(local.port)
        wait_until(lambda: any(t.endswith("/status") for t, _, _ in county_w.snapshot()), 20, "the gateway online")
        devices.publish(f"vg/{CLINIC}/device/glu-0001/reading", glucose(1, ts_at(1), 2.2))
        alert = wait_until(lambda: _firing(county_w), 20, "the alert at the county")
        assert gw.stop(signal.SIGTERM) == 0  # the box is off (a power cut, a reboot)
        county_ack = DevicePublisher(county.port, name="county-desk")
        county_ack.publish(f"vg/{CLINIC}/ack", json.dumps({"alert_id": alert["alert_id"], "by": "county-desk-1"}))
        gateway_process(cfg)  # back: its county session held the ack
        wait_until(
            lambda: "acknowledged" in _states(county_w, alert["alert_id"]), 30, "the offline ack applied and uplinked"
        )
        for w in (county_w, devices, county_ack):
            w.close()
    finally:
        local.stop()
        county.stop()
