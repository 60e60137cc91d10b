"""End to end through a real Mosquitto, driving `vitalgate run` from outside as a county center would."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from simulators.gatt_encoding import encode_bp_measurement, encode_glucose_measurement
from stream.models import CHINA_TZ

pytestmark = pytest.mark.broker

CLINIC = "c1"


def write_config(tmp: Path, port: int, escalation: str = "{village: 2s, township: 30m, county: 10m}") -> Path:
    """Only the contract's keys: everything else runs on defaults."""
    cfg = tmp / "gateway.yaml"
    cfg.write_text(f"""\
clinic: {CLINIC}
broker:
  host: 127.0.0.1
  port: {port}
storage:
  path: {tmp / "var"}
patients:
  - id: p-0001
    devices:
      - {{id: bp-0001, kind: blood_pressure}}
      - {{id: glu-0001, kind: glucose}}
  - id: p-0002
    devices:
      - {{id: bp-0002, kind: blood_pressure}}
      - {{id: glu-0002, kind: glucose}}
      - {{id: ecg-0002, kind: ecg}}
escalation:
  ack_timeout: {escalation}
""")
    return cfg


def now() -> datetime:
    return datetime.now(CHINA_TZ).replace(microsecond=0)


def bp_json(ts: datetime, sys_: int, dia: int, seq: int, movement: bool = False) -> str:
    return json.dumps(
        {
            "kind": "blood_pressure",
            "ts": ts.isoformat(),
            "seq": seq,
            "systolic": sys_,
            "diastolic": dia,
            "pulse": 80,
            "unit": "mmHg",
            "status": {"body_movement": movement, "irregular_pulse": False, "cuff_loose": False},
        }
    )


def status_of(watcher_factory, port: int) -> dict:
    w = watcher_factory(port, [f"vg/{CLINIC}/status"])
    _, body = w.wait_for(lambda t, b: "online" in b, timeout=10)
    return body


def test_readings_rejections_alerts_acks_escalation_and_clean_stop(tmp_path, broker, gateway_process, watcher_factory):
    gw = gateway_process(write_config(tmp_path, broker.port))
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/#"])
    w.wait_for(lambda t, b: t.endswith("/status") and b.get("online") is True, timeout=15)
    dev = f"vg/{CLINIC}/device"
    t = now()

    # Bad input first: none of it may stop the good readings that follow.
    w.publish(f"{dev}/bp-0001/reading", b"{not json")
    w.publish(f"{dev}/bp-9999/reading", bp_json(t, 120, 80, 1))  # unknown device
    w.publish(f"{dev}/bp-0001/reading", bp_json(t, 400, 80, 2))  # implausible
    w.publish(f"{dev}/bp-0001/gatt/2a35", b"\x1e\x8a")  # truncated GATT
    w.publish(
        f"{dev}/glu-0001/reading",
        json.dumps({"kind": "blood_pressure", "ts": t.isoformat(), "systolic": 120, "diastolic": 80}),
    )  # wrong kind for a meter

    # Good readings, JSON and raw GATT, are republished per patient.
    w.publish(f"{dev}/bp-0001/reading", bp_json(t, 128, 82, 3))
    w.publish(f"{dev}/bp-0001/reading", bp_json(t, 128, 82, 3))  # QoS 1 redelivery: a duplicate
    w.publish(f"{dev}/bp-0002/gatt/2a35", encode_bp_measurement(131, 84, pulse=70, when=t.replace(tzinfo=None)))
    _, r1 = w.wait_for(lambda t_, b: t_ == f"vg/{CLINIC}/patient/p-0001/reading" and b.get("systolic") == 128)
    assert r1["patient_id"] == "p-0001" and r1["device_id"] == "bp-0001" and "received_at" in r1
    _, r2 = w.wait_for(lambda t_, b: t_ == f"vg/{CLINIC}/patient/p-0002/reading" and b.get("systolic") == 131)
    assert r2["kind"] == "blood_pressure" and r2["pulse"] == 70

    # bp_crisis: two unflagged readings >= 180/110, 2 minutes apart by device time -> township.
    w.publish(f"{dev}/bp-0002/reading", bp_json(t - timedelta(minutes=2), 186, 118, 10))
    w.publish(f"{dev}/bp-0002/reading", bp_json(t, 190, 120, 11))
    _, crisis = w.wait_for(lambda t_, b: t_ == f"vg/{CLINIC}/alert/township" and b.get("condition") == "bp_crisis")
    assert crisis["patient_id"] == "p-0002" and crisis["state"] == "firing" and crisis["tier"] == "township"
    assert crisis["clinic"] == CLINIC and crisis["escalated_from"] is None and crisis["severity"] == "high"

    # hypoglycemia_severe from a raw GATT glucose record -> township.
    w.publish(f"{dev}/glu-0002/gatt/2a18", encode_glucose_measurement(7, t.replace(tzinfo=None), 2.6))
    _, hypo = w.wait_for(
        lambda t_, b: t_ == f"vg/{CLINIC}/alert/township" and b.get("condition") == "hypoglycemia_severe"
    )
    assert hypo["patient_id"] == "p-0002"

    # Acknowledge the crisis: the gateway confirms with state acknowledged.
    w.publish(f"vg/{CLINIC}/ack", json.dumps({"alert_id": crisis["alert_id"], "by": "dr-li"}))
    _, acked = w.wait_for(lambda t_, b: b.get("alert_id") == crisis["alert_id"] and b.get("state") == "acknowledged")
    assert acked["acknowledged_by"] == "dr-li"

    # Mild hypoglycaemia at the village tier, unacknowledged for 2 s, escalates to the township.
    w.publish(f"{dev}/glu-0001/reading", json.dumps({"kind": "glucose", "ts": t.isoformat(), "seq": 3, "mmol_l": 3.5}))
    _, mild = w.wait_for(lambda t_, b: t_ == f"vg/{CLINIC}/alert/village" and b.get("condition") == "hypoglycemia")
    _, esc = w.wait_for(lambda t_, b: t_ == f"vg/{CLINIC}/alert/township" and b.get("alert_id") == mild["alert_id"])
    assert esc["escalated_from"] == "village" and esc["tier"] == "township" and esc["state"] == "firing"

    # The retained status counts what was accepted and why things were rejected.
    time.sleep(0.3)
    reps = [b for t_, b in w.json(f"vg/{CLINIC}/patient/p-0001/reading") if b.get("systolic") == 128]
    assert len(reps) == 1, "a redelivered reading must not be republished twice"
    assert gw.proc.poll() is None, "the gateway died on bad input"
    assert gw.stop(signal.SIGTERM) == 0
    final = status_of(watcher_factory, broker.port)
    assert final["online"] is False
    rejected = final["counters"]["rejected"]
    for reason in (
        "malformed_json",
        "unknown_device",
        "implausible_value",
        "malformed_gatt",
        "wrong_kind",
        "duplicate",
    ):
        assert rejected.get(reason, 0) >= 1, (reason, rejected)
    assert final["counters"]["accepted"]["blood_pressure"] >= 4
    assert final["devices"]["bp-0001"]["last_seen"] is not None


def test_flagged_crisis_readings_never_raise_bp_crisis(tmp_path, broker, gateway_process, watcher_factory):
    gateway_process(write_config(tmp_path, broker.port))
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/#"])
    w.wait_for(lambda t, b: t.endswith("/status") and b.get("online") is True, timeout=15)
    t = now()
    w.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp_json(t - timedelta(minutes=2), 188, 118, 1, movement=True))
    w.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp_json(t, 190, 119, 2))
    w.wait_for(lambda t_, b: t_.endswith("p-0001/reading") and b.get("seq") == 2)
    time.sleep(1.0)
    assert not [b for _, b in w.json(f"vg/{CLINIC}/alert/") if b.get("condition") == "bp_crisis"]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_restart_neither_loses_nor_repeats_alerts_and_keeps_due_times(
    tmp_path, broker, gateway_process, watcher_factory, stop_signal
):
    cfg = write_config(tmp_path, broker.port, escalation="{village: 4h, township: 6s, county: 10m}")
    gw = gateway_process(cfg)
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/#"])
    w.wait_for(lambda t, b: t.endswith("/status") and b.get("online") is True, timeout=15)
    t = now()
    w.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp_json(t - timedelta(minutes=3), 186, 118, 1))
    w.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp_json(t - timedelta(minutes=1), 188, 117, 2))
    _, first = w.wait_for(lambda t_, b: t_.endswith("/alert/township") and b.get("condition") == "bp_crisis")
    opened = time.monotonic()

    rc = gw.stop(stop_signal)
    assert rc == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL)
    gw2 = gateway_process(cfg)
    w.wait_for(
        lambda t_, b: (
            t_.endswith("/status") and b.get("online") is True and b.get("started_at") != first.get("opened_at")
        ),
        timeout=15,
    )
    # Still in crisis after the restart: the open alert is updated, not raised again.
    w.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp_json(t, 192, 121, 3))
    w.wait_for(lambda t_, b: t_.endswith("p-0001/reading") and b.get("seq") == 3)

    _, esc = w.wait_for(lambda t_, b: t_.endswith("/alert/county") and b.get("condition") == "bp_crisis", timeout=20)
    escalated_after = time.monotonic() - opened
    assert esc["alert_id"] == first["alert_id"] and esc["escalated_from"] == "township"
    # The due time survived the restart: ~6 s after opening, not 6 s after the restart.
    assert escalated_after < 6 + 5, escalated_after
    time.sleep(0.5)
    crisis_ids = {b["alert_id"] for _, b in w.json(f"vg/{CLINIC}/alert/") if b.get("condition") == "bp_crisis"}
    assert crisis_ids == {first["alert_id"]}
    # One raise: a SIGKILL between the broker taking the message and the outbox recording it makes the
    # restarted gateway send that same message again (at-least-once, identical: same transition time);
    # raising it again would be a second transition.
    firing_township = {
        (b["alert_id"], b["updated_at"])
        for t_, b in w.json(f"vg/{CLINIC}/alert/township")
        if b.get("condition") == "bp_crisis" and b.get("state") == "firing"
    }
    assert len(firing_township) == 1, f"the crisis was raised twice: {firing_township}"
    assert gw2.stop() == 0
