"""The uplink outbox: bounded, alerts never dropped, alerts first, idempotent; and the drop alarm end to end."""

from __future__ import annotations

import json
import signal

import pytest

from outbound.uplink_outbox import PRIORITY_ALERT, PRIORITY_TELEMETRY, UplinkOutbox
from tests.support.store_forward import (
    CLINIC,
    DevicePublisher,
    PersistentMosquitto,
    SessionWatcher,
    bp,
    stored_keys,
    ts_at,
    wait_until,
    write_config,
)


def _tele(box: UplinkOutbox, i: int, patient: str = "p-0001") -> None:
    box.stage(f"r-{i}", PRIORITY_TELEMETRY, f"vg/c1/patient/{patient}/reading", f'{{"seq": {i}}}', patient_id=patient)


def test_alerts_drain_first_and_telemetry_keeps_its_order(tmp_path):
    box = UplinkOutbox(tmp_path / "o.db", max_outbox=1000)
    for i in range(5):
        _tele(box, i)
    box.stage("a-1", PRIORITY_ALERT, "vg/c1/alert/village", "{}")
    _tele(box, 5)
    box.stage("a-2", PRIORITY_ALERT, "vg/c1/alert/county", "{}")
    assert box.flush() is None
    assert [r.msg_id for r in box.next_batch(100)] == ["a-1", "a-2", "r-0", "r-1", "r-2", "r-3", "r-4", "r-5"]
    assert box.counts()["pending_alerts"] == 2 and box.counts()["pending_telemetry"] == 6


def test_staging_the_same_message_twice_adds_nothing_even_after_it_was_sent(tmp_path):
    box = UplinkOutbox(tmp_path / "o.db", max_outbox=1000)
    _tele(box, 1)
    _tele(box, 1)
    box.flush()
    rows = box.next_batch(10)
    assert len(rows) == 1
    box.mark_sent(rows)
    _tele(box, 1)  # a redelivered reading after it went out: remembered, not forwarded again
    box.flush()
    assert box.next_batch(10) == [] and box.pending == 0


def test_when_full_the_oldest_telemetry_goes_never_an_alert(tmp_path):
    box = UplinkOutbox(tmp_path / "o.db", max_outbox=100)
    box.stage("a-0", PRIORITY_ALERT, "vg/c1/alert/township", "{}")
    for i in range(150):
        _tele(box, i, patient=f"p-{i % 3}")
    report = box.flush()
    assert report is not None and report.dropped == 50
    assert sum(report.by_patient.values()) == 50
    rows = box.next_batch(1000)
    assert rows[0].msg_id == "a-0"
    assert [r.msg_id for r in rows[1:]] == [f"r-{i}" for i in range(50, 150)]
    assert box.counts()["dropped"] == 50 and box.pending_telemetry == 100
    # Alerts are not counted against the bound and never dropped.
    for i in range(300):
        box.stage(f"a-x{i}", PRIORITY_ALERT, "vg/c1/alert/county", "{}")
    assert box.flush() is None
    assert box.pending_alerts == 301


def test_state_survives_reopening(tmp_path):
    box = UplinkOutbox(tmp_path / "o.db", max_outbox=1000)
    for i in range(10):
        _tele(box, i)
    box.flush()
    box.mark_sent(box.next_batch(4))
    box.close()
    again = UplinkOutbox(tmp_path / "o.db", max_outbox=1000)
    assert again.pending_telemetry == 6
    assert [r.msg_id for r in again.next_batch(100)] == [f"r-{i}" for i in range(4, 10)]


def test_prune_keeps_recent_sent_ids_only(tmp_path):
    box = UplinkOutbox(tmp_path / "o.db", max_outbox=1000, retain=10)
    for i in range(50):
        _tele(box, i)
    box.flush()
    box.mark_sent(box.next_batch(50))
    assert box.prune() == 40


@pytest.mark.broker
def test_full_outbox_raises_a_technical_alert_and_keeps_every_alert(tmp_path, gateway_process):
    local = PersistentMosquitto(tmp_path, "local")
    county = PersistentMosquitto(tmp_path, "county")
    try:
        cfg = write_config(tmp_path, local.port, county.port, patients=2, max_outbox=100)
        county_w = SessionWatcher(county.port, [f"vg/{CLINIC}/#"], "county-watch")
        clinic_w = SessionWatcher(local.port, [f"vg/{CLINIC}/alert/#"], "clinic-watch")
        devices = DevicePublisher(local.port)
        gw = gateway_process(cfg)
        wait_until(lambda: any(t.endswith("/status") for t, _, _ in county_w.snapshot()), 20, "the gateway online")
        county.stop()
        for i in range(300):
            devices.publish(f"vg/{CLINIC}/device/bp-{i % 2 + 1:04d}/reading", bp(i, ts_at(i)))

        def drop_alarm():
            for _, p, _ in clinic_w.alerts():
                a = json.loads(p)
                if a["condition"] == "missed_readings" and a["patient_id"] == "gateway":
                    return a
            return None

        alarm = wait_until(drop_alarm, 20, "the technical alert about dropped telemetry")
        assert alarm["evidence"]["technical"] == "uplink_outbox_full"
        assert alarm["evidence"]["dropped_total"] >= 1
        wait_until(lambda: len(stored_keys(tmp_path / "var")) >= 300, 30, "all 300 readings stored")
        county.start()
        wait_until(
            lambda: {(b["seq"]) for _, b, _ in county_w.readings()} >= set(range(200, 300)),
            60,
            "the newest 100 readings at the county",
        )
        got = {b["seq"] for _, b, _ in county_w.readings()}
        dropped = set(range(300)) - got
        assert dropped == set(range(200)), "exactly the oldest telemetry beyond the bound is dropped"
        # The technical alert itself reached the county (alerts are never dropped).
        wait_until(
            lambda: any(json.loads(p).get("condition") == "missed_readings" for _, p, _ in county_w.alerts()),
            30,
            "the technical alert at the county",
        )
        assert gw.stop(signal.SIGTERM) == 0
        print(
            f"\noutbox max 100: 300 readings in, {len(got & set(range(300)))} forwarded, "
            f"{len(dropped)} oldest dropped and alerted"
        )
        for w in (county_w, clinic_w, devices):
            w.close()
    finally:
        local.stop()
        county.stop()


def _tls_material(d):
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    import subprocess

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=vitalgate-test-ca",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    return d / "ca.pem", d / "server.pem", d / "server.key"


@pytest.mark.broker
def test_uplink_over_tls_with_username_and_password(tmp_path, gateway_process):
    import os
    import shutil
    import subprocess

    if not shutil.which("openssl") or not shutil.which("mosquitto_passwd"):
        pytest.skip("needs the openssl and mosquitto_passwd commands")
    from simulators.stack import free_port, wait_port

    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    ca, cert, key = _tls_material(tls_dir)
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "clinic-c1", "s3cret"], check=True, capture_output=True)
    port = free_port()
    conf = tmp_path / "county-tls.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {pw}\nlog_type error\n" + ("user root\n" if os.geteuid() == 0 else "")
    )
    county = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    local = PersistentMosquitto(tmp_path, "local")
    try:
        wait_port(port)
        import ssl
        import threading

        import paho.mqtt.client as mqtt

        got: list[str] = []
        ready = threading.Event()
        w = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="county-tls-watch")
        w.username_pw_set("clinic-c1", "s3cret")
        w.tls_set_context(ssl.create_default_context(cafile=str(ca)))
        w.on_connect = lambda c, u, f, rc, p=None: (c.subscribe(f"vg/{CLINIC}/#", qos=1), ready.set())
        w.on_message = lambda c, u, m: got.append(m.topic)
        w.connect("127.0.0.1", port)
        w.loop_start()
        assert ready.wait(10)
        cfg = write_config(tmp_path, local.port, port, patients=1)
        cfg.write_text(
            cfg.read_text().replace(
                f"  port: {port}\n",
                f"  port: {port}\n  tls: true\n  ca_file: {ca}\n  username: clinic-c1\n  password: s3cret\n",
            )
        )
        gw = gateway_process(cfg)
        devices = DevicePublisher(local.port)
        wait_until(lambda: f"vg/{CLINIC}/status" in got, 20, "the status over TLS")
        for i in range(20):
            devices.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp(i, ts_at(i)))
        wait_until(lambda: got.count(f"vg/{CLINIC}/patient/p-0001/reading") >= 20, 20, "readings over TLS")
        assert gw.stop(signal.SIGTERM) == 0
        devices.close()
        w.loop_stop()
    finally:
        county.terminate()
        local.stop()


@pytest.mark.broker
def test_uplink_with_a_client_certificate_to_a_broker_that_requires_one(tmp_path, gateway_process):
    """Mutual TLS (issue 16 item 8): a county broker with `require_certificate true` admits the clinic
    with its client certificate, and refuses a client without one."""
    import os
    import shutil
    import ssl
    import subprocess
    import threading

    import paho.mqtt.client as mqtt

    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    from simulators.stack import free_port, wait_port

    d = tmp_path / "tls"
    d.mkdir()
    ca, cert, key = _tls_material(d)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "clinic.key", "-out", "clinic.csr", "-subj", f"/CN={CLINIC}")
    run(
        "x509",
        "-req",
        "-in",
        "clinic.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "clinic.pem",
        "-days",
        "2",
    )
    port = free_port()
    conf = tmp_path / "county-mtls.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        "require_certificate true\nallow_anonymous true\nlog_type error\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    county = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    local = PersistentMosquitto(tmp_path, "local")
    try:
        wait_port(port)

        def watcher(with_cert: bool) -> tuple[mqtt.Client, list[str], threading.Event]:
            got: list[str] = []
            ready = threading.Event()
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"county-watch-{with_cert}")
            ctx = ssl.create_default_context(cafile=str(ca))
            if with_cert:
                ctx.load_cert_chain(str(d / "clinic.pem"), str(d / "clinic.key"))
            c.tls_set_context(ctx)
            c.on_connect = lambda cl, u, f, rc, p=None: (
                (not rc.is_failure) and (cl.subscribe(f"vg/{CLINIC}/#", qos=1), ready.set())
            )
            c.on_message = lambda cl, u, m: got.append(m.topic)
            try:
                c.connect("127.0.0.1", port)
                c.loop_start()
            except (ssl.SSLError, OSError):
                pass
            return c, got, ready

        stranger, _, stranger_ready = watcher(with_cert=False)
        w, got, ready = watcher(with_cert=True)
        assert ready.wait(10), "a client with a certificate is admitted"
        cfg = write_config(tmp_path, local.port, port, patients=1)
        cfg.write_text(
            cfg.read_text().replace(
                f"  port: {port}\n",
                f"  port: {port}\n  tls: true\n  ca_file: {ca}\n"
                f"  cert_file: {d / 'clinic.pem'}\n  key_file: {d / 'clinic.key'}\n",
            )
        )
        gw = gateway_process(cfg)
        devices = DevicePublisher(local.port)
        wait_until(lambda: f"vg/{CLINIC}/status" in got, 20, "the clinic's status over mutual TLS")
        for i in range(5):
            devices.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp(i, ts_at(i)))
        wait_until(lambda: got.count(f"vg/{CLINIC}/patient/p-0001/reading") >= 5, 20, "readings over mutual TLS")
        assert not stranger_ready.is_set(), "a client without a certificate must be refused"
        assert gw.stop(signal.SIGTERM) == 0
        devices.close()
        for c in (w, stranger):
            c.loop_stop()
    finally:
        county.terminate()
        local.stop()
