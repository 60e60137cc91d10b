"""Readings per second through the whole pipeline, as a ratio to raw Mosquitto + paho-mqtt.

All measured in one run, on one Mosquitto (loopback, QoS 1, the same BP JSON
payloads, ~230 B), with the same publisher (this process, paho, a window of
1,000 messages awaiting PUBACK):

1. raw: publisher -> Mosquitto -> a bare paho subscriber in its own process
   (auto-ack), done at the last message; measured before and after the
   gateway runs;
2. gateway: the same publisher -> Mosquitto -> `vitalgate run` (decode, check,
   store in SQLite, acknowledge after the commit, judge, republish on the
   patient topic at QoS 1) -> done when readings.db holds every reading;
3. gateway + TSDB: the same with the `influxdb:` sink writing to
   VictoriaMetrics; done when readings.db holds every reading, and (reported
   separately) when VictoriaMetrics does.

Ratios are printed against the first raw run as each line comes, and at the
end against the mean of both raw runs (the fairer baseline on a shared
machine). The raw subscriber has its own process, as the gateway does: in the
publisher's process it would share its GIL, which slows the publisher down
and made raw look ~30 % slower than it is (`--raw-in-process` shows that
figure too). Each cuff's readings come in device-time order, minutes apart,
the warm-up's before the measured ones, as a clinic's would.

    python bench/throughput.py [--n 30000] [--patients 500] [--no-tsdb] [--profile FILE] [--raw-in-process]

`--profile FILE` records the gateway with py-spy (collapsed stacks), or with
cProfile when FILE ends in `.prof`. The CPU seconds each process used during
each measurement are printed at the end.

Target (issue 6): at QoS 1 the gateway reaches >= 50 % of raw. The machine is
shared and noisy: compare the ratios of one run, not absolute numbers across
runs (docs/spec/machine-limits.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import doc_block  # noqa: E402  (bench/, beside this one: --doc)

from simulators.stack import free_port, wait_port  # noqa: E402

CLINIC = "bench"
WINDOW = 1000  # publisher's QoS 1 messages awaiting PUBACK (mids are 16-bit, docs/spec/machine-limits.md)
PROFILE = ""  # --profile FILE
BROKER_PID = 0
CPU: dict[str, dict[str, float]] = {}  # CPU seconds per process during each measurement


def start_mosquitto(work: Path) -> tuple[subprocess.Popen, int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence false\nlog_type error\n"
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def payloads(n: int, patients: int, offset: int, end: datetime | None = None) -> list[tuple[str, bytes]]:
    """n BP readings spread over the patients' cuffs, unique seq.

    Device times as a real clinic's: a patient's readings are minutes apart
    (the BP rules look back over 7 days per patient, so thousands of readings
    1 ms apart from one cuff would measure something no clinic sends), each
    cuff's in device-time order, the last ones about `end` (default: now).
    """
    base = first_ts(n, patients, end)
    out = []
    for i in range(offset, offset + n):
        dev = f"bp-{i % patients + 1:04d}"
        ts = base + timedelta(minutes=10 * ((i - offset) // patients), milliseconds=i % patients)
        body = {
            "kind": "blood_pressure",
            "ts": ts.isoformat(),
            "seq": i,
            "systolic": 110 + i % 25,
            "diastolic": 70 + i % 10,
            "pulse": 60 + i % 30,
            "unit": "mmHg",
            "status": {"body_movement": False, "irregular_pulse": False, "cuff_loose": False},
        }
        out.append((f"vg/{CLINIC}/device/{dev}/reading", json.dumps(body).encode()))
    return out


def first_ts(n: int, patients: int, end: datetime | None = None) -> datetime:
    """The device time of the first of `payloads(n, patients, end=end)`."""
    end = end or datetime.now(timezone(timedelta(hours=8))).replace(microsecond=0)
    return end - timedelta(minutes=10 * -(-n // patients) + 5)


class Publisher:
    """paho at QoS 1 with a bounded in-flight window."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
        self.client.max_inflight_messages_set(WINDOW)
        self.slots = threading.Semaphore(WINDOW)
        self.client.on_publish = lambda *a: self.slots.release()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, msgs: list[tuple[str, bytes]]) -> float:
        t0 = time.perf_counter()
        for topic, body in msgs:
            self.slots.acquire()
            self.client.publish(topic, body, qos=1)
        return t0

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def raw(port: int, msgs: list[tuple[str, bytes]], in_process: bool = False) -> float:
    """Bare publisher -> Mosquitto -> bare subscriber (auto-ack); msg/s until the last one arrived.

    The subscriber runs in its own process, as the gateway does: in this
    process it would share the publisher's GIL and slow both down (the
    publisher must be the same in both measurements). `in_process` measures
    it the old way, for comparison.
    """
    if in_process:
        return _raw_in_process(port, msgs)
    sub = subprocess.Popen(
        [sys.executable, __file__, "--raw-subscriber", str(port), str(len(msgs))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sub.stdout is not None
        if sub.stdout.readline().strip() != "subscribed":
            raise RuntimeError("raw subscriber did not subscribe")
        pub = Publisher(port)
        cpu0 = cpu_s(BROKER_PID), cpu_s(os.getpid()), cpu_s(sub.pid)
        t0 = pub.send(msgs)
        line = sub.stdout.readline().split()
        if not line or line[0] != "done":
            raise TimeoutError(f"raw: the subscriber gave up: {' '.join(line)}")
        CPU["raw"] = {
            "broker": cpu_s(BROKER_PID) - cpu0[0],
            "bench": cpu_s(os.getpid()) - cpu0[1],
            "subscriber": cpu_s(sub.pid) - cpu0[2],
        }
        pub.close()
        return len(msgs) / (float(line[1]) - t0)  # perf_counter is CLOCK_MONOTONIC: one clock for both
    finally:
        try:
            sub.wait(10)
        except subprocess.TimeoutExpired:
            sub.kill()
            sub.wait()


def _counting_subscriber(port: int, n: int) -> tuple[mqtt.Client, threading.Event, list[float], list[int]]:
    """A bare paho subscriber on the device topics: `done` is set at the n-th message, whose
    perf_counter time is `t_last[0]`; `got[0]` counts what arrived."""
    got = [0]
    done = threading.Event()
    t_last = [0.0]

    def on_message(c, u, m):  # type: ignore[no-untyped-def]
        got[0] += 1
        if got[0] == n:
            t_last[0] = time.perf_counter()
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}")
    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.subscribe(f"vg/{CLINIC}/device/#", qos=1)
    sub.loop_start()
    subscribed.wait(10)
    return sub, done, t_last, got


def raw_subscriber(port: int, n: int) -> int:
    """The raw path's subscriber process: print `subscribed`, then `done <perf_counter of the n-th message>`."""
    sub, done, t_last, got = _counting_subscriber(port, n)
    print("subscribed", flush=True)
    if not done.wait(300):
        print(f"timeout {got[0]} of {n}", flush=True)
        return 1
    print(f"done {t_last[0]!r}", flush=True)
    time.sleep(0.2)  # (lets the bench read this process's CPU time before it exits)
    sub.loop_stop()
    sub.disconnect()
    return 0


def _raw_in_process(port: int, msgs: list[tuple[str, bytes]]) -> float:
    sub, done, t_last, got = _counting_subscriber(port, len(msgs))
    pub = Publisher(port)
    cpu0 = cpu_s(BROKER_PID), cpu_s(os.getpid())
    t0 = pub.send(msgs)
    if not done.wait(300):
        raise TimeoutError(f"raw: only {got[0]} of {len(msgs)} arrived")
    CPU["raw"] = {"broker": cpu_s(BROKER_PID) - cpu0[0], "bench": cpu_s(os.getpid()) - cpu0[1]}
    pub.close()
    sub.loop_stop()
    sub.disconnect()
    return len(msgs) / (t_last[0] - t0)


def gateway_config(work: Path, port: int, patients: int, vm_url: str | None) -> Path:
    pts = "\n".join(
        f"  - id: p-{i:04d}\n    devices:\n      - {{id: bp-{i:04d}, kind: blood_pressure}}"
        for i in range(1, patients + 1)
    )
    tsdb = f"influxdb:\n  url: {vm_url}\n  batch_size: 5000\n  flush_interval: 500ms\n" if vm_url else ""
    cfg = work / "gateway.yaml"
    cfg.write_text(
        f"clinic: {CLINIC}\nbroker: {{host: 127.0.0.1, port: {port}}}\nstorage:\n  path: {work / 'var'}\n"
        f"patients:\n{pts}\nstatus: {{interval: 5s}}\n{tsdb}"
    )
    return cfg


def cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (and its reaped children) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_count(fn, n: int, timeout: float, every: float = 0.02) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn() >= n:
            return time.perf_counter()
        time.sleep(every)
    raise TimeoutError(f"only {fn()} of {n} after {timeout}s")


def vm_points(url: str) -> int:
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10).read()
    q = urllib.parse.urlencode({"match[]": '{__name__="vitals_systolic"}'})
    with urllib.request.urlopen(f"{url}/api/v1/export?{q}", timeout=60) as r:
        return sum(len(json.loads(line)["values"]) for line in r.read().decode().splitlines() if line.strip())


def gateway_run(work: Path, port: int, msgs: list[tuple[str, bytes]], patients: int, vm_url: str | None = None) -> dict:
    cfg = gateway_config(work, port, patients, vm_url)
    log = open(work / "gateway.log", "wb")
    cmd = [sys.executable, "-m", "box.cli", "run", "--config", str(cfg), "--log-level", "WARNING"]
    if PROFILE.endswith(".prof"):  # cProfile (deterministic: call counts, syscalls; slows Python code)
        cmd = [sys.executable, "-m", "cProfile", "-o", PROFILE, "-m", "box.cli", *cmd[3:]]
    elif PROFILE:  # py-spy's raw (collapsed) stacks of the gateway, for finding hot spots
        cmd = ["py-spy", "record", "-r", "250", "-f", "raw", "-o", PROFILE, "--", *cmd]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        db = work / "var" / "readings.db"
        pub = Publisher(port)
        # Warm-up: the gateway is subscribed and has created every patient's worker. Device times
        # before the measured readings', so each cuff's readings stay in order as a clinic's do.
        warm = payloads(
            patients * 4, patients, offset=10_000_000, end=first_ts(len(msgs), patients) - timedelta(minutes=10)
        )
        deadline = time.monotonic() + 30
        while stored(db) == 0 and time.monotonic() < deadline:
            pub.send(warm[:1])
            time.sleep(0.3)
        pub.send(warm)
        base = len(warm)
        wait_count(lambda: stored(db), base, 60)
        base = stored(db)
        cpu0 = {"gateway": cpu_s(proc.pid), "broker": cpu_s(BROKER_PID), "bench": cpu_s(os.getpid())}
        t0 = pub.send(msgs)
        t_end = wait_count(lambda: stored(db) - base, len(msgs), 600)
        out = {"rate": len(msgs) / (t_end - t0), "seconds": t_end - t0}
        cpu1 = {"gateway": cpu_s(proc.pid), "broker": cpu_s(BROKER_PID), "bench": cpu_s(os.getpid())}
        out["cpu"] = {k: cpu1[k] - cpu0[k] for k in cpu0}
        if vm_url:
            t_vm = wait_count(lambda: vm_points(vm_url), len(msgs) + base, 600, every=0.5)
            out["tsdb_rate"] = len(msgs) / (t_vm - t0)
        pub.close()
        return out
    finally:
        proc.send_signal(signal.SIGINT if PROFILE else signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def start_vm(work: Path) -> tuple[subprocess.Popen, str] | None:
    exe = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
    if not Path(exe).exists():
        return None
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={work / 'vm'}",
            "-dedup.minScrapeInterval=1ms",
            "-loggerLevel=ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30_000, help="readings per measurement")
    ap.add_argument("--patients", type=int, default=500)
    ap.add_argument("--no-tsdb", action="store_true", help="skip the VictoriaMetrics run")
    ap.add_argument(
        "--profile",
        default="",
        help="record the gateway with py-spy into FILE (collapsed stacks), or with cProfile if FILE ends in .prof",
    )
    ap.add_argument(
        "--raw-in-process",
        action="store_true",
        help="also measure raw with the subscriber in the publisher's process (the old way)",
    )
    ap.add_argument("--raw-subscriber", nargs=2, type=int, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--doc", action="store_true", help="also write the output into docs/performance.md")
    args = ap.parse_args()
    with doc_block.captured(args.doc, "throughput", "python bench/throughput.py"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.raw_subscriber:
        return raw_subscriber(*args.raw_subscriber)
    global PROFILE, BROKER_PID
    PROFILE = args.profile
    msgs = payloads(args.n, args.patients, offset=0)
    size = sum(len(b) for _, b in msgs) / len(msgs)
    print(f"{args.n} BP readings (~{size:.0f} B JSON), {args.patients} patients, QoS 1, Mosquitto on loopback")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vg-bench-") as tmp:
        work = Path(tmp)
        broker, port = start_mosquitto(work)
        BROKER_PID = broker.pid
        vm = None
        try:
            if args.raw_in_process:
                results["raw_in_process"] = raw(port, msgs, in_process=True)
                CPU["raw_in_process"] = CPU.pop("raw")
                print(f"  (raw, subscriber in the publisher's process: {results['raw_in_process']:.0f} msg/s)")
            results["raw"] = raw(port, msgs)
            print(f"  raw mosquitto + paho:           {results['raw']:8.0f} msg/s")
            (work / "gw").mkdir()
            g = gateway_run(work / "gw", port, msgs, args.patients)
            results["gateway"] = g["rate"]
            CPU["gateway"] = g["cpu"]
            print(
                f"  gateway -> SQLite:              {g['rate']:8.0f} readings/s  "
                f"({g['rate'] / results['raw']:.0%} of raw)"
            )
            if not args.no_tsdb:
                vm = start_vm(work)
                if vm is None:
                    print("  (victoria-metrics not installed: TSDB run skipped)")
                else:
                    (work / "gw-tsdb").mkdir()
                    g2 = gateway_run(work / "gw-tsdb", port, msgs, args.patients, vm_url=vm[1])
                    results["gateway_tsdb"] = g2["rate"]
                    results["gateway_tsdb_all_in_vm"] = g2["tsdb_rate"]
                    CPU["gateway_tsdb"] = g2["cpu"]
                    print(
                        f"  gateway -> SQLite + TSDB sink:  {g2['rate']:8.0f} readings/s  "
                        f"({g2['rate'] / results['raw']:.0%} of raw)"
                    )
                    print(
                        f"  ... all points in VictoriaMetrics: {g2['tsdb_rate']:8.0f} readings/s  "
                        f"({g2['tsdb_rate'] / results['raw']:.0%} of raw)"
                    )
            # Raw again at the end: the machine is shared, show how much the baseline moved.
            raw_cpu = CPU["raw"]
            results["raw_after"] = raw(port, payloads(args.n, args.patients, offset=args.n))
            CPU["raw_after"], CPU["raw"] = CPU["raw"], raw_cpu
            print(f"  raw again (noise check):        {results['raw_after']:8.0f} msg/s")
        finally:
            for proc in [broker] + ([vm[0]] if vm is not None else []):
                proc.terminate()
                try:
                    proc.wait(15)  # before the directory is removed under it
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if "raw_after" in results:  # the baseline measured before and after the gateway runs (noisy machine)
        base = (results["raw"] + results["raw_after"]) / 2
        ratios = {k: v / base for k, v in results.items() if k.startswith("gateway")}
        print(
            f"  ratios to the mean of both raw runs ({base:.0f} msg/s): "
            + ", ".join(f"{k} {v:.0%}" for k, v in ratios.items())
        )
        results.update({f"ratio_{k}": round(v, 3) for k, v in ratios.items()})
    if not PROFILE:  # (under py-spy the gateway's pid is py-spy's)
        print(
            "  CPU seconds during each measurement: "
            + "; ".join(f"{k}: " + ", ".join(f"{p} {v:.1f}" for p, v in c.items()) for k, c in CPU.items())
        )
    print(json.dumps({k: round(v, 3 if k.startswith("ratio") else 1) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
