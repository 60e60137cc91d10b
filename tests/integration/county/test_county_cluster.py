"""The county centre against the real thing: a 3-node NATS JetStream cluster started from the configs
`vitalgate county-engine` writes, `vitalgate county` processes, clinics uplinking over a server's MQTT
listener and natively (outbound/nats_uplink.py). Faults with real processes: a county process SIGKILLed
mid-stream, a NATS server SIGKILLed mid-stream. Counts asserted: sent = stored, per patient."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.county import (
    CountyProcess,
    MqttClinic,
    NativeClinic,
    NatsCluster,
    SubjectLog,
    TcpLink,
    alert,
    county_config_for,
    kill_leftovers,
    reading,
)

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
    mq.publish(
        "vg/cm/status",
        '{"clinic": "cm", "online": true, "updated_at": "2026-03-15T09:00:00.000+08:00", '
        '"uplink": {"connected": true, "pending_alerts": 0, "pending_telemetry": 42}}',
        retain=True,
    )
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

    county.wait_for(
        lambda: (
            total_stored(county, "cm", ["p0", "p1", "p2", "p3"]) >= 80
            and total_stored(county, "cn", ["q0", "q1", "q2"]) >= 60
        ),
        what="all readings stored",
    )
    time.sleep(1.0)  # anything doubled would have arrived by now
    assert_once_each(county, "cm", {f"p{i}": 20 for i in range(4)})
    assert_once_each(county, "cn", {f"q{i}": 20 for i in range(3)})

    status, body = county.api("/api/alerts?clinic=cm&state=all")
    assert status == 200 and [a["state"] for a in body["alerts"]] == ["acknowledged"]
    status, one = county.api("/api/alerts/cm-a1")
    assert [(h["state"], h["tier"]) for h in one["history"]] == [("firing", "county"), ("acknowledged", "county")]
    assert county.api("/api/alerts?clinic=cm&state=active")[1]["alerts"][0]["alert_id"] == "cm-a1"

    mq.drop()  # the uplink's connection dies: the server publishes the clinic's last will
    clinics = county.wait_for(
        lambda: (
            (c := {x["clinic"]: x for x in county.api("/api/clinics")[1]["clinics"]})
            and c.get("cm", {}).get("offline_reason") == "last_will"
            and c
        ),
        what="last will seen",
    )
    assert clinics["cn"]["online"] is True
    assert list(clinics)[0] == "cm", "offline clinics come first"
    nat.close()

    assert county.api("/api/clinics", token=None)[0] == 401
    assert county.api("/api/clinics", token="wrong")[0] == 401
    assert county.stop(signal.SIGTERM) == 0


def test_a_county_ack_goes_down_to_the_clinic(cluster: NatsCluster, tmp_path: Path) -> None:
    county = CountyProcess(county_config_for(cluster, tmp_path))
    county.wait_for(lambda: county.health()["ready"], what="ready")
    mq = MqttClinic("km", cluster.mqtt_port(2), subscribe=["vg/km/ack"])  # on server 3's MQTT listener
    mq.publish(*alert("km", "km-a1", "p7", tier="emergency", condition="vt_sustained"))
    nat = NativeClinic("kn", tmp_path / "kn", list(reversed(cluster.urls)))
    nat.send_alert(*alert("kn", "kn-a1", "q2"))
    county.wait_for(
        lambda: {a["alert_id"] for a in county.api("/api/alerts")[1]["alerts"]} >= {"km-a1", "kn-a1"},
        what="both alerts at the county",
    )
    assert county.api("/api/alerts")[1]["alerts"][0]["tier"] == "emergency", "emergency first"

    t0 = time.monotonic()
    status, sent = county.api("/api/alerts/km-a1/ack", "POST", {"by": "county-dr-zhang"})
    assert status == 202 and sent["topic"] == "vg/km/ack", sent
    got = county.wait_for(lambda: mq.received, timeout=2.0, what="ack on vg/km/ack within 2 s")
    # Two copies may come (the stream's at QoS 0, county/ack_copy.py's at QoS 1): the gateway applies one.
    assert set(map(str, got)) == {str(("vg/km/ack", {"alert_id": "km-a1", "by": "county-dr-zhang"}))}
    status, _ = county.api("/api/alerts/kn-a1/ack", "POST", {"by": "county-dr-zhang"})
    assert status == 202
    county.wait_for(lambda: nat.control, timeout=3.0, what="ack through the native uplink")
    assert set(map(str, nat.control)) == {str(("vg/kn/ack", {"alert_id": "kn-a1", "by": "county-dr-zhang"}))}
    assert time.monotonic() - t0 < 5

    assert county.api("/api/alerts/nope/ack", "POST", {"by": "x"})[0] == 404
    assert county.api("/api/alerts/km-a1/ack", "POST", {"who": "x"})[0] == 422
    assert county.api("/api/alerts/km-a1/ack", "POST", {"by": "x"}, token=None)[0] == 401
    assert [a["by"] for a in county.api("/api/alerts/km-a1")[1]["county_acks"]] == ["county-dr-zhang"]
    mq.close()
    nat.close()
    assert county.stop() == 0


def test_an_ack_sent_while_an_mqtt_clinic_is_away_arrives_when_it_is_back(cluster: NatsCluster, tmp_path: Path) -> None:
    """A clinic on the MQTT uplink keeps a persistent session (outbound/uplink.py); the county's QoS 1
    copy of the ack (county/ack_copy.py) waits in it while the clinic is away."""
    county = CountyProcess(county_config_for(cluster, tmp_path))
    county.wait_for(lambda: county.health()["ready"], what="ready")
    mq = MqttClinic("kq", cluster.mqtt_port(0), subscribe=["vg/kq/ack"], persistent=True)
    mq.publish(*alert("kq", "kq-a1", "p3", tier="county"))
    county.wait_for(lambda: county.api("/api/alerts?clinic=kq")[1]["alerts"], what="the alert at the county")
    mq.close()  # away (a clean disconnect keeps a persistent session)

    status, _ = county.api("/api/alerts/kq-a1/ack", "POST", {"by": "county-dr-sun"})
    assert status == 202
    assert county.health()["counters"]["ack_mqtt_copies"] == 1
    back = MqttClinic("kq", cluster.mqtt_port(1), subscribe=["vg/kq/ack"], persistent=True)  # another server
    got = county.wait_for(lambda: back.received, timeout=10.0, what="the ack queued while the clinic was away")
    assert got[0] == ("vg/kq/ack", {"alert_id": "kq-a1", "by": "county-dr-sun"})
    back.close()
    assert county.stop() == 0


def test_an_alert_does_not_wait_for_the_telemetry_batch_in_flight(cluster: NatsCluster, tmp_path: Path) -> None:
    """The cluster stops answering while a batch of readings awaits its acks; an alert staged then is
    issued at once (outbound/nats_uplink.py, `express_alerts`), not after the batch's acks."""
    county = CountyProcess(county_config_for(cluster, tmp_path))
    county.wait_for(lambda: county.health()["ready"], what="ready")
    nat = NativeClinic("kx2", tmp_path / "kx2", cluster.urls)
    county.wait_for(lambda: nat.counts()["connected"], what="the uplink connected")
    patients = [f"r{i}" for i in range(4)]
    cluster.pause()
    try:
        nat.send([reading("kx2", patients[i % 4], i) for i in range(200)])
        time.sleep(0.5)  # the batch is issued and waits for acks nobody sends
        nat.send_alert(*alert("kx2", "kx2-a1", "r1", tier="emergency", condition="vt_sustained"))
        time.sleep(0.5)
    finally:
        cluster.resume()
    county.wait_for(
        lambda: nat.counts()["pending_alerts"] == 0 and nat.counts()["pending_telemetry"] == 0,
        timeout=30,
        what="the outbox drained once the cluster answers",
    )
    assert nat.counts()["express_alerts"] == 1
    county.wait_for(lambda: total_stored(county, "kx2", patients) == 200, what="every reading stored")
    assert_once_each(county, "kx2", {p: 50 for p in patients})
    assert "kx2-a1" in {a["alert_id"] for a in county.api("/api/alerts?clinic=kx2")[1]["alerts"]}
    nat.close()
    assert county.stop() == 0


def test_a_killed_county_process_hands_its_partitions_over(cluster: NatsCluster, tmp_path: Path) -> None:
    cfg = county_config_for(cluster, tmp_path)
    a = CountyProcess(cfg, name="county-a")
    b = CountyProcess(cfg, name="county-b")
    a.wait_for(
        lambda: len(a.health()["partitions"]) == 4 and len(b.health()["partitions"]) == 4,
        what="the partitions shared 4 + 4",
    )
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
    nat = NativeClinic(
        "kx", tmp_path / "kx", [cluster.urls[victim]] + [u for u in cluster.urls if u != cluster.urls[victim]]
    )
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


def test_a_gateway_uplinks_natively_and_takes_the_countys_ack(
    cluster: NatsCluster, tmp_path: Path, gateway_process
) -> None:
    """`vitalgate run` with the `uplink:` section county-engine wrote for server 2 (native NATS): its
    readings and alert reach the county, and the county's ack stops the clinic's ladder."""
    import json

    import yaml

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
        wait_until(
            lambda: any(t.endswith("/status") and json.loads(p).get("online") for t, p, _ in clinic_w.snapshot()),
            20,
            "the gateway online",
        )
        devices = DevicePublisher(local.port)
        devices.publish(f"vg/{CLINIC}/device/glu-0001/reading", glucose(1, ts_at(1), 2.2))
        alerts = county.wait_for(
            lambda: county.api(f"/api/alerts?clinic={CLINIC}")[1]["alerts"], what="the clinic's alert at the county"
        )
        assert alerts[0]["condition"] == "hypoglycemia_severe"
        county.wait_for(lambda: stored(county, CLINIC, "p-0001"), what="the reading at the county")
        # The gateway's status lists its patients by village (ids only); the weekly figures count them there.
        villages = county.wait_for(lambda: county.api("/api/weekly")[1]["by_village"], what="the clinic's villages")
        assert villages == [
            {
                "village": "dongcun",
                "clinics": [CLINIC],
                "patients": 1,
                "bp_patients": 0,
                "bp_controlled": 0,
                "bp_control_rate": None,
                "bp_too_few_readings": 0,
                "af_found": 0,
                "af_by_alert": 0,
                "af_by_strip": 0,
            }
        ]
        status = next(c["status"] for c in county.api("/api/clinics")[1]["clinics"] if c["clinic"] == CLINIC)
        assert status["villages"] == {"dongcun": ["p-0001"]}
        status, _ = county.api(f"/api/alerts/{alerts[0]['alert_id']}/ack", "POST", {"by": "county-dr-li"})
        assert status == 202
        wait_until(
            lambda: any(
                json.loads(p)["state"] == "acknowledged" and json.loads(p)["acknowledged_by"] == "county-dr-li"
                for t, p, _ in clinic_w.alerts()
                if "/alert/" in t
            ),
            20,
            "the county's ack applied by the clinic gateway",
        )
        assert gw.stop(signal.SIGTERM) == 0
        for w in (clinic_w, devices):
            w.close()
    finally:
        local.stop()
        assert county.stop() == 0


CUT_S = float(os.environ.get("VITALGATE_COUNTY_CUT_S", "12"))  # the minutes: VITALGATE_COUNTY_CUT_S=180


def test_a_clinic_cut_off_sends_its_backlog_alerts_first_and_takes_the_ack_sent_meanwhile(
    tmp_path: Path, gateway_process
) -> None:
    """`vitalgate run` on the native uplink, its only way to the county a TCP link that is cut for CUT_S
    while readings flow. Before the cut the county has alert A; during it the county acknowledges A (the
    stream takes the ack, the clinic cannot hear it) and the clinic raises alert B. After the link is
    mended: the ack reaches the clinic and A's ladder stops, B reaches the county before any reading held
    during the cut, and every reading is stored at the county exactly once."""
    import json

    import yaml

    from tests.support.store_forward import (
        CLINIC,
        DevicePublisher,
        PersistentMosquitto,
        SessionWatcher,
        bp,
        glucose,
        ts_at,
        wait_until,
        write_config,
    )

    (tmp_path / "cluster").mkdir()
    cluster = NatsCluster(tmp_path / "cluster", no_advertise=True)
    local = PersistentMosquitto(tmp_path, "local")
    link = TcpLink(cluster.client_port(1))
    log = SubjectLog(cluster.urls[0], f"vgp.*.{CLINIC}.>")  # as the partition mapping writes them
    county = CountyProcess(county_config_for(cluster, tmp_path))
    try:
        county.wait_for(lambda: county.health()["ready"], what="ready")
        cfg = write_config(tmp_path, local.port, None, patients=4)
        gw_cfg = yaml.safe_load(cfg.read_text())
        uplink = yaml.safe_load((cluster.engine_dir / "uplink-2.yaml").read_text())["uplink"]
        gw_cfg["uplink"] = {**uplink, "nats": [f"nats://127.0.0.1:{link.port}"]}  # the link is the only way
        cfg.write_text(yaml.safe_dump(gw_cfg, sort_keys=False))
        clinic_w = SessionWatcher(local.port, [f"vg/{CLINIC}/alert/#", f"vg/{CLINIC}/status"], "clinic-watch")
        gw = gateway_process(cfg)
        wait_until(
            lambda: any(t.endswith("/status") and json.loads(p).get("online") for t, p, _ in clinic_w.snapshot()),
            20,
            "the gateway online",
        )
        devices = DevicePublisher(local.port)
        sent: Counter[str] = Counter()
        seq = 0

        def send_bp(n: int, rate: float = 50.0) -> list[tuple[str, int]]:
            nonlocal seq
            keys = []
            for _ in range(n):
                p = seq % 4 + 1
                devices.publish(f"vg/{CLINIC}/device/bp-{p:04d}/reading", bp(seq, ts_at(seq, step_s=0.25)))
                sent[f"p-{p:04d}"] += 1
                keys.append((f"bp-{p:04d}", seq))
                seq += 1
                time.sleep(1 / rate)
            return keys

        send_bp(40)
        devices.publish(f"vg/{CLINIC}/device/glu-0001/reading", glucose(10_001, ts_at(2), 2.2))
        sent["p-0001"] += 1
        alert_a = county.wait_for(
            lambda: county.api(f"/api/alerts?clinic={CLINIC}")[1]["alerts"], what="alert A at the county"
        )[0]
        county.wait_for(
            lambda: total_stored(county, CLINIC, list(sent)) == sum(sent.values()), what="the readings before the cut"
        )

        link.cut()
        t0 = time.monotonic()
        status, _ = county.api(f"/api/alerts/{alert_a['alert_id']}/ack", "POST", {"by": "county-dr-wang"})
        assert status == 202  # the stream has it; the clinic cannot hear it yet
        devices.publish(f"vg/{CLINIC}/device/glu-0003/reading", glucose(10_002, ts_at(3), 2.1))
        sent["p-0003"] += 1
        held = set()
        while time.monotonic() - t0 < CUT_S:
            held.update(send_bp(20, rate=20))

        def acked_at_clinic() -> bool:
            return any(
                json.loads(p)["alert_id"] == alert_a["alert_id"] and json.loads(p)["state"] == "acknowledged"
                for _, p, _ in clinic_w.alerts()
            )

        assert not acked_at_clinic(), "the clinic heard the county's ack through a cut link"
        alerts_b = [json.loads(p) for _, p, _ in clinic_w.alerts() if json.loads(p)["patient_id"] == "p-0003"]
        assert alerts_b and alerts_b[0]["condition"] == "hypoglycemia_severe", "alert B raised at the clinic"
        cut_from = len(log.subjects)

        link.restore()
        wait_until(acked_at_clinic, 20, "the county's ack applied by the clinic once the link is back")
        county.wait_for(
            lambda: total_stored(county, CLINIC, list(sent)) == sum(sent.values()),
            timeout=60,
            what="the backlog at the county",
        )
        for patient, n in sent.items():
            rows = stored(county, CLINIC, patient)
            keys = Counter((r["device_id"], r["seq"]) for r in rows)
            assert len(rows) == n and max(keys.values()) == 1, f"{patient}: sent {n}, stored {len(rows)}"
        ids = {a["alert_id"] for a in county.api(f"/api/alerts?clinic={CLINIC}")[1]["alerts"]}
        assert {alert_a["alert_id"], alerts_b[0]["alert_id"]} <= ids

        # Alerts first: B's message reached the cluster before any reading held during the cut.
        after = log.subjects[cut_from:]
        first_b = next(
            i
            for i, (s, d) in enumerate(after)
            if ".alert." in s and json.loads(d)["alert_id"] == alerts_b[0]["alert_id"]
        )
        held_at = [
            i
            for i, (s, d) in enumerate(after)
            if ".reading." in s and (json.loads(d)["device_id"], json.loads(d)["seq"]) in held
        ]
        assert held_at and first_b < min(held_at), "the held alert must go up before the held readings"
        print(f"cut {CUT_S:.0f}s: {len(held)} readings held, sent after the cut; ack and alert B through")
        assert gw.stop(signal.SIGTERM) == 0
        for w in (clinic_w, devices):
            w.close()
    finally:
        log.close()
        link.close()
        local.stop()
        county.stop()
        cluster.stop()
