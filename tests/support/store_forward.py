"""Helpers for the store-and-forward tests: brokers that keep their sessions, a county watcher,
a device publisher that retries until the broker has a reading, VictoriaMetrics, and counters
read straight from the gateway's SQLite files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from outbound.uplink import alert_msg_id
from simulators import stack
from simulators.stack import Broker, StackError, free_port, stored_keys  # noqa: F401 (stored_keys: for the tests)
from stream.models import CHINA_TZ

CLINIC = "c1"


class PersistentMosquitto(Broker):
    """A Mosquitto that keeps sessions and queued messages across a restart, as on the clinic box."""

    def __init__(self, workdir: Path, name: str) -> None:
        try:
            super().__init__(workdir, name)
        except StackError as exc:
            pytest.skip(str(exc))
        self.start()

    def restart(self) -> None:
        self.stop()
        self.start()


class SessionWatcher(stack.SessionWatcher):
    """The scenario stack's persistent-session watcher; `snapshot()` gives (topic, payload, msg_id)."""

    def __init__(self, port: int, topics: list[str], name: str) -> None:
        super().__init__(port, topics, name)
        time.sleep(0.2)

    def snapshot(self) -> list[tuple[str, bytes, str | None]]:
        return [(t, p, m) for t, p, m, _ in self.arrivals()]

    def readings(self) -> list[tuple[str, dict, str | None]]:
        return [(t, json.loads(p), m) for t, p, m in self.snapshot() if t.endswith("/reading")]

    def alerts(self) -> list[tuple[str, bytes, str | None]]:
        return [(t, p, m) for t, p, m in self.snapshot() if "/alert/" in t]


class DevicePublisher:
    """Publishes readings at QoS 1 and retries each until the broker acknowledged it.

    `acked` is what the clinic's broker took responsibility for: "readings in".
    """

    def __init__(self, port: int, name: str = "devices") -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{os.getpid()}")
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.max_inflight_messages_set(100)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.acked: list[tuple[str, str]] = []
        self.retries = 0

    def publish(self, topic: str, payload: str, deadline_s: float = 60.0) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if not self.client.is_connected():
                time.sleep(0.05)
                continue
            info = self.client.publish(topic, payload, qos=1)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
            if info.is_published():
                self.acked.append((topic, payload))
                return
            self.retries += 1
        raise TimeoutError(f"broker did not take {topic} within {deadline_s}s")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def ts_at(i: int, start: datetime | None = None, step_s: float = 0.5) -> str:
    """Device time of the i-th reading: recent (not back-filled), never in the future."""
    base = start or (datetime.now(CHINA_TZ) - timedelta(minutes=30))
    return (base.replace(microsecond=0) + timedelta(seconds=i * step_s)).isoformat()


def bp(seq: int, ts: str, sys_: int = 124, dia: int = 78) -> str:
    return json.dumps(
        {
            "kind": "blood_pressure",
            "ts": ts,
            "seq": seq,
            "systolic": sys_,
            "diastolic": dia,
            "pulse": 72,
            "unit": "mmHg",
            "status": {"body_movement": False},
        }
    )


def glucose(seq: int, ts: str, mmol: float) -> str:
    return json.dumps({"kind": "glucose", "ts": ts, "seq": seq, "mmol_l": mmol, "meal": "fasting"})


def write_config(
    tmp: Path,
    local_port: int,
    county_port: int | None = None,
    storage: Path | None = None,
    patients: int = 4,
    max_outbox: int | None = None,
    influx_url: str | None = None,
) -> Path:
    lines = [
        f"clinic: {CLINIC}",
        "broker:",
        "  host: 127.0.0.1",
        f"  port: {local_port}",
        "storage:",
        f"  path: {storage or tmp / 'var'}",
        "patients:",
    ]
    for i in range(1, patients + 1):
        lines += [
            f"  - id: p-{i:04d}",
            "    devices:",
            f"      - {{id: bp-{i:04d}, kind: blood_pressure}}",
            f"      - {{id: glu-{i:04d}, kind: glucose}}",
        ]
    if county_port is not None:
        lines += ["uplink:", "  host: 127.0.0.1", f"  port: {county_port}"]
        if max_outbox is not None:
            lines.append(f"  max_outbox: {max_outbox}")
    if influx_url is not None:
        lines += ["influxdb:", f"  url: {influx_url}", "  flush_interval: 200ms", "  batch_size: 500"]
    lines += ["status:", "  interval: 1s"]
    cfg = tmp / "gateway.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


# ---------------------------------------------------------------- what the gateway holds


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def alert_messages(storage: Path) -> list[tuple[str, str, bool]]:
    """(topic, payload, delivered locally) of every alert message the dispatcher committed to send."""
    p = storage / "alerts.db"
    if not p.exists():
        return []
    with _ro(p) as db:
        rows = db.execute("SELECT topic_tier, payload, delivered_at FROM outbox ORDER BY id").fetchall()
    return [(f"vg/{CLINIC}/alert/{t}", payload, d is not None) for t, payload, d in rows]


def county_alert_ids(watcher: SessionWatcher) -> set[str]:
    return {alert_msg_id(t, p) for t, p, _ in watcher.alerts()}


def wait_until(pred, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        proc.wait(20)


# ---------------------------------------------------------------- VictoriaMetrics


class VictoriaMetrics:
    """`victoria-metrics` on a free loopback port; accepts influxdb-client's /api/v2/write."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
        if not Path(exe).exists():
            pytest.skip("victoria-metrics is not installed (scripts/test.sh installs it)")
        self.exe = exe
        self.port = free_port()
        self.data = workdir / "vm-data"
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.exe,
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.data}",
                "-dedup.minScrapeInterval=1ms",
                "-loggerLevel=ERROR",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("victoria-metrics did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def export(self, match: str = '{__name__=~"vitals_.*"}') -> list[dict]:
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
        q = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{q}", timeout=30) as r:
            return [json.loads(line) for line in r.read().decode().splitlines() if line.strip()]

    def samples(self, metric: str) -> list[tuple[dict, float, int]]:
        """(labels, value, timestamp ms) of every sample of one metric."""
        out = []
        for series in self.export(f'{{__name__="{metric}"}}'):
            for v, t in zip(series["values"], series["timestamps"]):
                out.append((series["metric"], v, t))
        return out


def wait_gateway_online(port: int, timeout: float = 20) -> None:
    """Until the gateway's retained status says online (it has subscribed: readings are not lost)."""
    w = SessionWatcher(port, [f"vg/{CLINIC}/status"], "online-watch")
    try:
        wait_until(
            lambda: any(json.loads(p).get("online") is True for _, p, _ in w.snapshot()), timeout, "the gateway online"
        )
    finally:
        w.close()
