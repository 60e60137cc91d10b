"""Shared fixtures: a real Mosquitto per test on a free loopback port, a gateway process, an MQTT watcher;
the ECG data set's location."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from simulators.stack import free_port, wait_port
from tests.support.paths import ECG_DATA, ECG_SLICES, REPO, ecg_data  # noqa: F401 (fixtures and tests read them here)


class Mosquitto:
    """A real broker process; `restart()` keeps the port (for reconnect tests)."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            pytest.skip("mosquitto is not installed (the README's test command installs it)")
        self.exe = exe
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        # max_queued_messages 0: never drop a QoS 1 message for a slow subscriber (docs/spec/machine-limits.md).
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
            f"persistence false\nlog_type error\n"
        )
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path)
    yield b
    b.stop()


class Watcher:
    """An outside MQTT client (as the county center would be) that records what it sees."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watcher-{time.monotonic_ns()}")
        subscribed = threading.Event()

        def on_connect(c, userdata, flags, rc, props=None):
            for t in topics:
                c.subscribe(t, qos=1)
            subscribed.set()

        def on_message(c, userdata, msg):
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "watcher could not subscribe"
        time.sleep(0.2)

    def json(self, prefix: str = "") -> list[tuple[str, dict]]:
        with self._lock:
            out = []
            for t, p, _ in self.messages:
                if t.startswith(prefix):
                    try:
                        out.append((t, json.loads(p)))
                    except ValueError:
                        pass
            return out

    def wait_for(self, pred: Callable[[str, dict], bool], timeout: float = 15.0, prefix: str = "") -> tuple[str, dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, body in self.json(prefix):
                if pred(t, body):
                    return t, body
            time.sleep(0.05)
        seen = [(t, b.get("condition"), b.get("state")) for t, b in self.json(prefix)][-20:]
        raise AssertionError(f"no matching message within {timeout}s; last seen: {seen}")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def watcher_factory() -> Iterator[Callable[..., Watcher]]:
    made: list[Watcher] = []

    def make(port: int, topics: list[str]) -> Watcher:
        w = Watcher(port, topics)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


class GatewayProcess:
    """`vitalgate run --config PATH` as a real child process."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.proc: subprocess.Popen | None = None
        self.log = config_path.with_suffix(".log")

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "box.cli", "run", "--config", str(self.config_path)],
            cwd=REPO,
            env=env,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._logf.close()
        return rc

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def gateway_process() -> Iterator[Callable[[Path], GatewayProcess]]:
    made: list[GatewayProcess] = []

    def make(config_path: Path) -> GatewayProcess:
        g = GatewayProcess(config_path)
        made.append(g)
        g.start()
        return g

    yield make
    for g in made:
        if g.proc and g.proc.poll() is None:
            g.proc.kill()
            g.proc.wait()
