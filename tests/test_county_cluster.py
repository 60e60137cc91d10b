"""The county centre against the real thing: a 3-node NATS JetStream cluster started from the configs
`vitalgate county-engine` writes, `vitalgate county` processes, clinics uplinking over a server's MQTT
listener and natively (outbound/nats_uplink.py). Faults with real processes: a county process SIGKILLed
mid-stream, a NATS server SIGKILLed mid-stream. Counts asserted: sent = stored, per patient."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.county_support import (CountyProcess, MqttClinic, NatsCluster, NativeClinic, alert, county_config_for,
                                  kill_leftovers, reading)

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.county]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = NatsCluster(tmp_path_factory.mktemp("county-cluster"))
    yield c
    c.stop()


@pytest.fixture(autouse=True)
def no_county_left_running():
    yield
    kill_leftovers()  # a failed test leaves its county processes behind otherwise


def stored(county: CountyProcess, clinic: str, patient: str) -> list[dict]:
    status, body = county.api(f"/api/readings?clinic={clinic}&patient={patient}")
    assert status == 200, body
    return body["readings"]


def assert_once_each(county: CountyProcess, clinic: str, sent: dict[str, int]) -> None:
    """Every patient's readings stored exactly once: as many as sent, no (device, seq) twice, in device time."""
    for patient, n in sent.items():
        rows = stored(county, clinic, patient)
        keys = Counter((r["device_id"], r["kind"], r["ts"], r["seq"]) for r in rows)
        assert len(rows) == n, f"{clinic}/{patient}: sent {n}, stored {len(rows)}"
        assert max(keys.values()) == 1, f"{clinic}/{patient}: stored twice: {[k for k, c in keys.items() if c > 1][:3]}"
        assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)


def total_stored(county: CountyProcess, clinic: str, patients: list[str]) -> int:
    return sum(len(stored(county, clinic, p)) for p in patients)


def test_uplinks_over_mqtt_and_nats_are_stored_once_per_measurement(cluster: NatsCluster, tmp_path: Path) -> None:
    county = CountyProcess(county_config_for(cluster, tmp_path))
    county.wait_for(lambda: county.health()["ready"] and len(county.health()["partitions"]) == 8, what="ready")
    # Clinic "cm" on today's uplink: MQTT 3.1.1 QoS 1 through server 2's listener, retained status, last will.
    mq = MqttClinic("cm", cluster.mqtt_port(1))
    mq.publish("vg/cm/status", '{"clinic": "cm", "online": true, "updated_at": "2026-03-15T09:00:00.000+08:00", '
                               '"uplink": {"connected": true, "pending_alerts": 0, "pending_telemetry": 42}}', retain=True)
    rows = [reading("cm", f"p{i % 4}", i) for i in range(80)]
    for _, topic, payload in rows + rows[:15]:  # 15 sent again, as after a lost PUBACK
        mq.publish(topic, payload)
    mq.publish(*alert("cm", "cm-a1", "p1"))
    mq.publish(*alert("cm", "cm-a1", "p1", state="acknowledged", updated_at="2026-03-15T07:34:00.000+08:00"))
    mq.publish(*alert("cm", "cm-a1", "p1"))  # the firing transition again: history keeps it once
    # Clinic "cn" on the native uplink; it also resends ten of cm's measurements (same identity, other door).
    nat = NativeClinic("cn", tmp_path / "cn", cluster.urls)
    nat.set_status({"clinic": "cn", "online": True, "updated_at": "2026-03-15T09:00:00.000+08:00"})
    nat.send([reading("cn", f"q{i % 3}", i) for i in range(60)])
    nat.send([(f"again-{m}", t, p) for m, t, p in rows[:10]])
    nat.wait_drained()

    county.wait_for(lambda: total_stored(county, "cm", ["p0", "p1", "p2", "p3"]) >= 80
                    and total_stored(county, "cn", ["q0", "q1", "q2"]) >= 60, what="all readings stored")
    time.sleep(1.0)  # anything doubled would have arrived by now
    assert_once_each(county, "cm", {f"p{i}": 20 for i in range(4)})
    assert_once_each(county, "cn", {f"q{i}": 20 for i in range(3)})

    status, body = county.api("/api/alerts?clinic=cm&state=all")
    assert status == 200 and [a["state"] for a in body["alerts"]] == ["acknowledged"]
    status, one = county.api("/api/alerts/cm-a1")
    assert [(h["state"], h["tier"]) for h in one["history"]] == [("firing", "county"), ("acknowledged", "county")]
    assert county.api("/api/alerts?clinic=cm&state=active")[1]["alerts"][0]["alert_id"] == "cm-a1"

    mq.drop()  # the uplink's connection dies: the server publishes the clinic's last will
    clinics = county.wait_for(lambda: (c := {x["clinic"]: x for x in county.api("/api/clinics")[1]["clinics"]})
                              and c.get("cm", {}).get("offline_reason") == "last_will" and c, what="last will seen")
    assert clinics["cn"]["online"] is True
    assert list(clinics)[0] == "cm", "offline clinics come first"
    nat.close()

    assert county.api("/api/clinics", token=None)[0] == 401
    assert county.api("/api/clinics", token="wrong")[0] == 401
    assert county.stop(signal.SIGTERM) == 0


def test_a_county_ack_goes_down_to_the_clinic(cluster: NatsCluster, tmp_path: Path) -> None:
    county = CountyProcess(county_config_for(cluster, tmp_path))
    county.wait_for(lambda: county.health()["ready"], what="ready")
    mq = MqttClinic("km", cluster.mqtt_port(2), subscribe=["vg/km/ack"])   # on server 3's MQTT listener
    mq.publish(*alert("km", "km-a1", "p7", tier="emergency", condition="vt_sustained"))
    nat = NativeClinic("kn", tmp_path / "kn", list(reversed(cluster.urls)))
    nat.send_alert(*alert("kn", "kn-a1", "q2"))
    county.wait_for(lambda: {a["alert_id"] for a in county.api("/api/alerts")[1]["alerts"]} >= {"km-a1", "kn-a1"},
                    what="both alerts at the county")
    assert county.api("/api/alerts")[1]["alerts"][0]["tier"] == "emergency", "emergency first"

    t0 = time.monotonic()
    status, sent = county.api("/api/alerts/km-a1/ack", "POST", {"by": "county-dr-zhang"})
    assert status == 202 and sent["topic"] == "vg/km/ack", sent
    got = county.wait_for(lambda: mq.received, timeout=2.0, what="ack on vg/km/ack within 2 s")
    assert got == [("vg/km/ack", {"alert_id": "km-a1", "by": "county-dr-zhang"})]
    status, _ = county.api("/api/alerts/kn-a1/ack", "POST", {"by": "county-dr-zhang"})
    assert status == 202
    county.wait_for(lambda: nat.control, timeout=3.0, what="ack through the native uplink")
    assert nat.control == [("vg/kn/ack", {"alert_id": "kn-a1", "by": "county-dr-zhang"})]
    assert time.monotonic() - t0 < 5

    assert county.api("/api/alerts/nope/ack", "POST", {"by": "x"})[0] == 404
    assert county.api("/api/alerts/km-a1/ack", "POST", {"who": "x"})[0] == 422
    assert county.api("/api/alerts/km-a1/ack", "POST", {"by": "x"}, token=None)[0] == 401
    assert [a["by"] for a in county.api("/api/alerts/km-a1")[1]["county_acks"]] == ["county-dr-zhang"]
    mq.close()
    nat.close()
    assert county.stop() == 0


def test_a_killed_county_process_hands_its_partitions_over(cluster: NatsCluster, tmp_path: Path) -> None:
    cfg = county_config_for(cluster, tmp_path)
    a = CountyProcess(cfg, name="county-a")
    b = CountyProcess(cfg, name="county-b")
    a.wait_for(lambda: len(a.health()["partitions"]) == 4 and len(b.health()["partitions"]) == 4,
               what="the partitions shared 4 + 4")
    nat = NativeClinic("kc", tmp_path / "kc", cluster.urls)
    patients = [f"p{i}" for i in range(24)]
    n = 0
    for chunk in range(30):  # 3,000 readings over ~3 s; A is killed a third of the way in
        nat.send([reading("kc", patients[i % 24], i) for i in range(n, n + 100)])
        n += 100
        if chunk == 10:
            a.stop(signal.SIGKILL)
        time.sleep(0.1)
    nat.wait_drained()
    b.wait_for(lambda: len(b.health()["partitions"]) == 8, what="B holds every partition")
    b.wait_for(lambda: total_stored(b, "kc", patients) >= 3000, timeout=30, what="3,000 stored")
    time.sleep(3.5)  # past the ack wait: a redelivery of A's unacknowledged batch would show as a double
    assert_once_each(b, "kc", {p: 125 for p in patients})
    assert b.health()["members"] == [m for m in b.health()["members"] if m == b.health()["member"]]
    nat.close()
    assert b.stop(signal.SIGTERM) == 0


def test_losing_a_nats_server_mid_stream_loses_nothing(cluster: NatsCluster, tmp_path: Path) -> None:
    county = CountyProcess(county_config_for(cluster, tmp_path))
    county.wait_for(lambda: county.health()["ready"] and len(county.health()["partitions"]) == 8, what="ready")
    # The server the county process is connected to dies; the clinic's uplink uses it first too.
    victim = cluster.urls.index(county.health()["engine_server"])
    nat = NativeClinic("kx", tmp_path / "kx", [cluster.urls[victim]] + [u for u in cluster.urls if u != cluster.urls[victim]])
    patients = [f"p{i}" for i in range(20)]
    n = 0
    for chunk in range(30):  # 3,000 readings over ~3 s; the server dies a third of the way in
        nat.send([reading("kx", patients[i % 20], i) for i in range(n, n + 100)])
        n += 100
        if chunk == 10:
            cluster.kill(victim)
        time.sleep(0.1)
    counts = nat.wait_drained(timeout=45)
    county.wait_for(lambda: total_stored(county, "kx", patients) >= 3000, timeout=45, what="3,000 stored")
    time.sleep(1.0)
    assert_once_each(county, "kx", {p: 150 for p in patients})
    assert counts["sent"] >= 3000
    nat.close()
    assert county.stop() == 0
    cluster.start(victim)


def test_a_gateway_uplinks_natively_and_takes_the_countys_ack(cluster: NatsCluster, tmp_path: Path,
                                                               gateway_process) -> None:
    """`vitalgate run` with the `uplink:` section county-engine wrote for server 2 (native NATS): its
    readings and alert reach the county, and the county's ack stops the clinic's ladder."""
    import json

    import yaml
    from store_forward_support import (CLINIC, DevicePublisher, PersistentMosquitto, SessionWatcher, glucose, ts_at,
                                       wait_until, write_config)

    county = CountyProcess(county_config_for(cluster, tmp_path))
    county.wait_for(lambda: county.health()["ready"], what="ready")
    local = PersistentMosquitto(tmp_path, "local")
    try:
        cfg = write_config(tmp_path, local.port, None, patients=2)
        uplink = yaml.safe_load((cluster.engine_dir / "uplink-2.yaml").read_text())
        assert uplink["uplink"]["nats"][0] == cluster.urls[1], uplink
        gw_cfg = yaml.safe_load(cfg.read_text())
        gw_cfg["patients"][0]["labels"] = {"village": "dongcun", "township": "xiaozhen"}  # p-0002 has no village
        cfg.write_text(yaml.safe_dump({**gw_cfg, **uplink}, sort_keys=False))
        clinic_w = SessionWatcher(local.port, [f"vg/{CLINIC}/alert/#", f"vg/{CLINIC}/status"], "clinic-watch")
        gw = gateway_process(cfg)
        wait_until(lambda: any(t.endswith("/status") and json.loads(p).get("online")
                               for t, p, _ in clinic_w.snapshot()), 20, "the gateway online")
        devices = DevicePublisher(local.port)
        devices.publish(f"vg/{CLINIC}/device/glu-0001/reading", glucose(1, ts_at(1), 2.2))
        alerts = county.wait_for(lambda: county.api(f"/api/alerts?clinic={CLINIC}")[1]["alerts"],
                                 what="the clinic's alert at the county")
        assert alerts[0]["condition"] == "hypoglycemia_severe"
        county.wait_for(lambda: stored(county, CLINIC, "p-0001"), what="the reading at the county")
        # The gateway's status lists its patients by village (ids only); the weekly figures count them there.
        villages = county.wait_for(lambda: county.api("/api/weekly")[1]["by_village"], what="the clinic's villages")
        assert villages == [{"village": "dongcun", "clinics": [CLINIC], "patients": 1, "bp_patients": 0,
                             "bp_controlled": 0, "bp_control_rate": None, "bp_too_few_readings": 0, "af_found": 0,
                             "af_by_alert": 0, "af_by_strip": 0}]
        status = next(c["status"] for c in county.api("/api/clinics")[1]["clinics"] if c["clinic"] == CLINIC)
        assert status["villages"] == {"dongcun": ["p-0001"]}
        status, _ = county.api(f"/api/alerts/{alerts[0]['alert_id']}/ack", "POST", {"by": "county-dr-li"})
        assert status == 202
        wait_until(lambda: any(json.loads(p)["state"] == "acknowledged" and json.loads(p)["acknowledged_by"]
                               == "county-dr-li" for t, p, _ in clinic_w.alerts() if "/alert/" in t), 20,
                   "the county's ack applied by the clinic gateway")
        assert gw.stop(signal.SIGTERM) == 0
        for w in (clinic_w, devices):
            w.close()
    finally:
        local.stop()
        assert county.stop() == 0
