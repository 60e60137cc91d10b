"""A whole local stack for a scenario: clinic broker, county broker, `vitalgate run`.

`vitalgate simulate --stack` uses it when a scenario's infrastructure is part of
the story ("uplink down 5 min", "broker restart", "gateway killed"): the
simulator must own the processes it breaks. Both brokers are Mosquitto with
persistence on, as on the clinic box, so sessions and queued QoS 1 messages
survive a restart; the gateway runs as a real child process with a config
written from the scenario (one patient per scenario device).

After the run, `forwarded()` compares what the gateway stored and raised with
what reached the county broker: readings in = readings forwarded, alerts raised
= alerts delivered.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger("vitalgate.stack")

REPO = Path(__file__).resolve().parents[1]


class StackError(RuntimeError):
    """The stack could not be started; the message says what to install or check."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise StackError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def mosquitto_exe() -> str:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        raise StackError(
            "mosquitto is not installed: `apt-get install -y mosquitto`, or run the scenario against "
            "your own broker and gateway with --broker HOST:PORT"
        )
    return exe


class Broker:
    """A Mosquitto that keeps sessions and queued messages across a restart (persistence on)."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.name = name
        self.exe = mosquitto_exe()
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "mosquitto.conf"
        # max_queued_messages 0: never drop a QoS 1 message for a slow subscriber (docs/spec/machine-limits.md).
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
            f"persistence true\npersistence_location {self.dir}/\nautosave_interval 1\nlog_type error\n"
            # As root Mosquitto drops to the `mosquitto` user, which could not write its database here.
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=open(self.dir / "log.txt", "ab")
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.terminate()  # SIGTERM: Mosquitto saves its sessions and queues first
            self.proc.wait(10)


class Gateway:
    """`vitalgate run --config PATH` as a child process; its output goes to a log file."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "box.cli", "run", "--config", str(self.config)],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def gateway_config(
    scenario: dict[str, Any], clinic: str, broker_port: int, storage: Path, county_port: int | None = None
) -> dict[str, Any]:
    """The config a gateway under test needs for a scenario: one patient per scenario device."""
    patients = [
        {"id": f"p-{i:04d}", "devices": [{"id": dev, "kind": spec["kind"], **spec.get("gateway", {})}]}
        for i, (dev, spec) in enumerate(scenario["devices"].items(), start=1)
    ]
    cfg: dict[str, Any] = {
        "clinic": clinic,
        "broker": {"host": "127.0.0.1", "port": broker_port},
        "storage": {"path": str(storage)},
        "patients": patients,
        **scenario.get("gateway", {}),
    }
    if county_port is not None:
        cfg["uplink"] = {"host": "127.0.0.1", "port": county_port}
    return cfg


class SessionWatcher:
    """A subscriber with a persistent MQTT 5 session (the county center, or a test's observer):
    nothing published while it reconnects, or while its broker restarts, is missed.

    Records (topic, payload, `msg_id` user property or None, time.monotonic() on arrival)."""

    def __init__(self, port: int, topics: list[str], name: str) -> None:
        self.messages: list[tuple[str, bytes, str | None, float]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{os.getpid()}", protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(0.1, 1.0)  # type: ignore[arg-type]  # paho types these int; it takes seconds as floats
        subscribed = threading.Event()

        def on_connect(c, userdata, flags, rc, props=None):  # type: ignore[no-untyped-def]
            if not flags.session_present:
                c.subscribe([(t, 1) for t in topics])
            subscribed.set()

        def on_message(c, userdata, msg):  # type: ignore[no-untyped-def]
            mid = next((v for k, v in getattr(msg.properties, "UserProperty", None) or [] if k == "msg_id"), None)
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload), mid, time.monotonic()))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # keeps its queue while the broker restarts
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise StackError(f"{name} could not subscribe on 127.0.0.1:{port}")

    def arrivals(self) -> list[tuple[str, bytes, str | None, float]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def reading_key(body: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a forwarded reading unique (the natural key behind its idempotency key)."""
    return (body.get("device_id"), body.get("kind"), body.get("ts"), body.get("seq"))


@dataclass
class Forwarded:
    readings_stored: int
    readings_forwarded: int
    alerts_raised: int
    alerts_delivered: int
    duplicates: int

    @property
    def complete(self) -> bool:
        return self.readings_forwarded == self.readings_stored and self.alerts_delivered == self.alerts_raised

    def line(self) -> str:
        return (
            f"county: readings {self.readings_forwarded}/{self.readings_stored} stored forwarded, "
            f"alerts {self.alerts_delivered}/{self.alerts_raised} raised delivered, "
            f"{self.duplicates} duplicate(s) (at-least-once)"
        )


class Stack:
    """Brokers + gateway for one scenario; `close()` stops them all (also on errors)."""

    def __init__(self, scenario: dict[str, Any], clinic: str, uplink: bool, workdir: Path | None = None) -> None:
        # VITALGATE_STACK_DIR keeps the stack's files (configs, logs, databases) for a post-mortem.
        keep = os.environ.get("VITALGATE_STACK_DIR")
        workdir = workdir or (Path(keep) if keep else None)
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="vitalgate-stack-")
        self.dir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.clinic = clinic
        self.clinic_broker = Broker(self.dir, "clinic-broker")
        self.county_broker = Broker(self.dir, "county-broker") if uplink else None
        self.storage = self.dir / "var"
        cfg = gateway_config(
            scenario,
            clinic,
            self.clinic_broker.port,
            self.storage,
            self.county_broker.port if self.county_broker else None,
        )
        self.config = self.dir / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        self.gateway = Gateway(self.config, self.dir / "gateway.log")
        self.county: SessionWatcher | None = None

    @property
    def port(self) -> int:
        return self.clinic_broker.port

    def start(self) -> None:
        self.clinic_broker.start()
        if self.county_broker:
            self.county_broker.start()
            self.county = SessionWatcher(self.county_broker.port, [f"vg/{self.clinic}/#"], "county-watch")
        self.gateway.start()
        self.wait_online()
        log.info(
            "stack up",
            extra={
                "clinic_broker": self.clinic_broker.port,
                "county_broker": self.county_broker.port if self.county_broker else None,
                "workdir": str(self.dir),
            },
        )

    def wait_online(self, timeout: float = 30.0) -> None:
        """Until the gateway's retained status says online from its current process."""
        online = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"stack-online-{time.monotonic_ns()}")

        def on_connect(cl, userdata, flags, rc, props=None):  # type: ignore[no-untyped-def]
            cl.subscribe(f"vg/{self.clinic}/status", qos=1)

        def on_message(cl, userdata, msg):  # type: ignore[no-untyped-def]
            try:
                if json.loads(msg.payload).get("online") is True:
                    online.set()
            except ValueError:
                pass

        c.on_connect, c.on_message = on_connect, on_message
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        try:
            deadline = time.monotonic() + timeout
            while not online.wait(0.2):
                if self.gateway.proc is not None and self.gateway.proc.poll() is not None:
                    raise StackError(f"the gateway exited ({self.gateway.proc.returncode}):\n{self.gateway.tail()}")
                if time.monotonic() > deadline:
                    raise StackError(f"the gateway did not come online within {timeout:.0f}s:\n{self.gateway.tail()}")
        finally:
            c.loop_stop()
            c.disconnect()

    # ------------------------------------------------------------ what the timeline can do

    def uplink_down(self) -> None:
        if self.county_broker is None:
            raise StackError("uplink events need the county broker (the stack starts one when a scenario has them)")
        self.county_broker.stop()

    def uplink_up(self) -> None:
        if self.county_broker is not None and not self.county_broker.running:
            self.county_broker.start()

    def broker_down(self) -> None:
        self.clinic_broker.stop()

    def broker_up(self) -> None:
        if not self.clinic_broker.running:
            self.clinic_broker.start()

    def gateway_down(self, kill: bool) -> int | None:
        return self.gateway.stop(signal.SIGKILL if kill else signal.SIGTERM)

    def gateway_up(self) -> None:
        self.gateway.start()

    # ------------------------------------------------------------ counts

    def forwarded(self) -> Forwarded:
        """Stored readings vs readings on the county broker; raised alerts vs alerts there."""
        from outbound.uplink import alert_msg_id

        stored = stored_keys(self.storage)
        raised = {
            alert_msg_id(f"vg/{self.clinic}/alert/{tier}", payload)
            for tier, payload in _alert_rows(self.storage / "alerts.db")
        }
        msgs = self.county.arrivals() if self.county else []
        got_readings: list[tuple[Any, ...]] = []
        got_alerts: list[str] = []
        for topic, payload, _, _ in msgs:
            if topic.endswith("/reading"):
                try:
                    got_readings.append(reading_key(json.loads(payload)))
                except ValueError:
                    continue
            elif "/alert/" in topic:
                got_alerts.append(alert_msg_id(topic, payload))
        dup = (len(got_readings) - len(set(got_readings))) + (len(got_alerts) - len(set(got_alerts)))
        return Forwarded(len(stored), len(stored & set(got_readings)), len(raised), len(raised & set(got_alerts)), dup)

    def wait_forwarded(self, timeout: float) -> Forwarded:
        deadline = time.monotonic() + timeout
        f = self.forwarded()
        while not f.complete and time.monotonic() < deadline:
            time.sleep(0.25)
            f = self.forwarded()
        return f

    def close(self) -> None:
        rc = self.gateway.stop()
        if rc not in (None, 0):
            log.warning("gateway exit code at shutdown", extra={"rc": rc})
        if self.county:
            self.county.close()
        for b in (self.clinic_broker, self.county_broker):
            if b is not None:
                b.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stored_keys(storage: Path) -> set[tuple[Any, ...]]:
    """`reading_key` of every reading the gateway stored under `storage` (its storage.path)."""
    from stream.store import FILE_NAME, ReadingQueries

    readings = ReadingQueries(storage / FILE_NAME)
    try:
        return {reading_key(b) for b in readings.find(None)}
    finally:
        readings.close()


def _alert_rows(path: Path) -> list[tuple[str, str]]:
    from dispatch.alert_store import AlertQueries

    alerts = AlertQueries(path)
    try:
        return alerts.outbox_messages()
    finally:
        alerts.close()
