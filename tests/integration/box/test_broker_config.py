"""`vitalgate broker-config` against a real Mosquitto: only the box's own parties, least access each (issue 16)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from box.cli import main as cli_main
from simulators.stack import free_port, wait_port
from tests.support.broker import Client

pytestmark = pytest.mark.broker

CLINIC = "c1"


def _config(tmp_path: Path, port: int) -> Path:
    p = tmp_path / "gw.yaml"
    p.write_text(f"""clinic: {CLINIC}
broker:
  host: 127.0.0.1
  port: {port}
  username: gateway
  password: gw-secret-from-the-config
  accounts: [{{name: dr-li, role: staff}}, {{name: county-reader, role: reader}}]
storage: {{path: {tmp_path / "var"}}}
patients:
  - id: p-0001
    devices: [{{id: bp-0001, kind: blood_pressure}}, {{id: ecg-0001, kind: ecg}}]
""")
    return p


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[int, dict[str, str], str]]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.skip("mosquitto is not installed (the README's test command installs it)")
    port = free_port()
    out = tmp_path / "broker"
    assert (
        cli_main(["broker-config", "--config", str(_config(tmp_path, port)), "--out", str(out), "--user", "root"]) == 0
    )
    creds = dict(
        line.split(":", 1)
        for line in (out / "credentials.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    proc = subprocess.Popen([exe, "-c", str(out / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port)
        yield port, creds, (out / "passwd").read_text()
    finally:
        proc.terminate()
        proc.wait(10)


def test_passwords_are_hashed_and_only_the_gateway_password_comes_from_the_config(secured, capsys) -> None:
    port, creds, passwd = secured
    assert creds["gateway"] == "gw-secret-from-the-config"
    assert set(creds) == {"gateway", "dr-li", "county-reader", "bp-0001", "ecg-0001"}
    for pw in creds.values():
        assert pw not in passwd
    assert all(line.split(":", 1)[1].startswith("$7$") for line in passwd.splitlines())


def test_strangers_are_refused(secured) -> None:
    port, creds, _ = secured
    anon = Client(port, None, None)
    wrong = Client(port, "dr-li", "guess")
    try:
        assert anon.rc not in (None, 0) and wrong.rc not in (None, 0)
    finally:
        anon.close()
        wrong.close()


def _denied(port: int, user: str, password: str, topic: str, payload: bytes = b"{}") -> None:
    """Publish from a throwaway session: Mosquitto 2.0 answers a denied QoS 1 publish with a PUBACK
    reason code that an MQTT 3.1.1 client treats as a protocol error, so the session ends there."""
    c = Client(port, user, password)
    try:
        c.c.publish(topic, payload, qos=1)
        time.sleep(0.3)
    finally:
        c.close()


def test_each_party_has_least_access(secured) -> None:
    port, creds, _ = secured
    root = f"vg/{CLINIC}"
    gw = Client(port, "gateway", creds["gateway"])
    doctor = Client(port, "dr-li", creds["dr-li"])
    reader = Client(port, "county-reader", creds["county-reader"])
    device = Client(port, "ecg-0001", creds["ecg-0001"])
    clients = [gw, doctor, reader, device]
    try:
        assert all(c.rc == 0 for c in clients)
        gw.sub(f"{root}/#")
        reader.sub(f"{root}/patient/#")
        reader.sub(f"{root}/alert/#")
        device.sub(f"{root}/#")  # a device may read nothing
        doctor.sub(f"{root}/patient/#")  # staff do not read readings over MQTT
        doctor.sub(f"{root}/alert/#")
        device.pub(f"{root}/device/ecg-0001/reading")  # its own topic: allowed
        doctor.pub(f"{root}/ack", b'{"alert_id": "a-1", "by": "dr-li"}')  # staff: allowed
        doctor.pub(f"{root}/snooze", b'{"alert_id": "a-1", "by": "dr-li", "duration": "30m"}')
        gw.pub(f"{root}/patient/p-0001/reading")
        gw.pub(f"{root}/alert/village")
        time.sleep(0.5)
        assert reader.topics() == {f"{root}/patient/p-0001/reading", f"{root}/alert/village"}
        assert doctor.topics() == {f"{root}/alert/village"}
        assert device.topics() == set()
        # what an attacker with a device's or a reader's password tries
        _denied(port, "ecg-0001", creds["ecg-0001"], f"{root}/device/bp-0001/reading")  # posing as another device
        _denied(port, "ecg-0001", creds["ecg-0001"], f"{root}/ack", b'{"alert_id": "a", "by": "x"}')
        _denied(
            port,
            "county-reader",
            creds["county-reader"],
            f"{root}/silence",
            b'{"match": {}, "duration": "3650d", "include_critical": true}',
        )
        _denied(port, "bp-0001", creds["bp-0001"], f"{root}/patient/p-0001/reading")  # forging an output
        time.sleep(0.5)
        seen = gw.topics()
        assert seen >= {f"{root}/device/ecg-0001/reading", f"{root}/ack", f"{root}/snooze"}
        assert f"{root}/device/bp-0001/reading" not in seen and f"{root}/silence" not in seen
        assert sum(1 for t, _ in gw.got if t == f"{root}/ack") == 1  # only the doctor's
        assert sum(1 for t, _ in gw.got if t == f"{root}/patient/p-0001/reading") == 1  # only the gateway's
    finally:
        for c in clients:
            c.close()
