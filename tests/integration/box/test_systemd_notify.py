"""The gateway under systemd's `Type=notify` with a watchdog (box/systemd_notify.py, deploy/vitalgate.service).

systemd itself cannot run here (no PID 1 of ours); what it sees is the notify socket, so the test
binds one, starts `vitalgate run` with the environment systemd gives (`NOTIFY_SOCKET`,
`WATCHDOG_USEC`, `WATCHDOG_PID`) against a real Mosquitto, and reads what the gateway says.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from box.systemd_notify import SystemdNotifier
from tests.support.paths import REPO
from tests.support.store_forward import PersistentMosquitto, write_config

pytestmark = pytest.mark.broker


def listen(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.2)
    return s


def messages(sock: socket.socket, until: float) -> list[tuple[float, dict[str, str]]]:
    out = []
    while time.monotonic() < until:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        out.append((time.monotonic(), dict(line.split("=", 1) for line in data.decode().splitlines())))
    return out


def test_the_notifier_speaks_to_a_path_and_an_abstract_socket_and_is_silent_outside_systemd(tmp_path: Path) -> None:
    s = listen(str(tmp_path / "notify"))
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "3000000"})
    assert n.watchdog_s == 3.0
    n.ready("broker connected")
    n.tick("broker connected")  # a pet; the same status is not repeated
    got = [m for _, m in messages(s, time.monotonic() + 0.5)]
    assert got[0]["READY"] == "1" and got[0]["STATUS"] == "broker connected"
    assert got[1] == {"WATCHDOG": "1"}
    n.tick("broker connected")  # within a third of the period: nothing to say
    assert messages(s, time.monotonic() + 0.3) == []

    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"vitalgate-test-{os.getpid()}"
    abstract.bind("\0" + name)
    abstract.settimeout(0.2)
    SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).stopping()
    assert messages(abstract, time.monotonic() + 0.3)[0][1]["STOPPING"] == "1"

    quiet = SystemdNotifier({})
    assert not quiet.enabled and quiet.watchdog_s is None and quiet.send("READY=1") is False
    # the watchdog is another process's (WATCHDOG_PID): not ours to pet
    assert SystemdNotifier({"NOTIFY_SOCKET": "x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_s is None


def test_vitalgate_run_says_ready_pets_the_watchdog_and_says_stopping(tmp_path: Path) -> None:
    broker = PersistentMosquitto(tmp_path, "local")
    sock_path = str(tmp_path / "notify")
    sock = listen(sock_path)
    cfg = write_config(tmp_path, broker.port, None, patients=2)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="2000000", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "gateway.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "box.cli", "run", "--config", str(cfg)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        got = messages(sock, time.monotonic() + 15)
        ready = [t for t, m in got if m.get("READY") == "1"]
        pets = [t for t, m in got if m.get("WATCHDOG") == "1"]
        statuses = [m["STATUS"] for _, m in got if "STATUS" in m]
        assert ready, f"no READY=1 in 15 s: {got}"
        assert any("broker connected" in s for s in statuses), statuses
        # a period of 2 s: a pet at least every 2/3 s (the loop ticks each second), none missed
        assert len(pets) >= 8, pets
        assert max(b - a for a, b in zip(pets, pets[1:])) < 2.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert any(m.get("STOPPING") == "1" for _, m in messages(sock, time.monotonic() + 0.5))
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        sock.close()
        broker.stop()
