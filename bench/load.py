"""Load and alert latency: N simulated patients against a running gateway on a real Mosquitto.

Starts Mosquitto on a free loopback port and `vitalgate run` as a child
process, then for `--duration` seconds publishes:
  * BP and glucose readings for `--patients` patients (each every `--interval` s),
  * 1-s ECG frames (250 Hz JSON) from `--patches` patches in real time (all
    frames of a second sent together, as patches that sync to the clock do),
  * critical readings (severe hypoglycaemia) at random moments.
The patches publish on one connection, the meters on another (they are other
devices; on one connection a critical reading would wait behind a second's
frames in the load generator's own socket, which is not the gateway's doing).

Alert latency is measured from the publish of the reading that makes the
condition true to the alert's arrival on the broker (an outside subscriber,
as the county center sees it). The gateway's CPU and RSS come from /proc,
for the gateway and its child processes together. The ECG analysis' lag is
read from the gateway's status (every 2 s); after the load the bench waits up
to `--catch-up` seconds for the analysis to finish the backlog.

    python bench/load.py                       # 200 patients + 50 patches, 60 s
    python bench/load.py --patients 1500 --patches 1500 --interval 600 --duration 30 --criticals 6
    python bench/load.py --table 600,1500,3000 --duration 30   # the issue's table, one run per row
    python bench/load.py --patches 1500 --duration 600 --interval 600 --criticals 30   # soak: 10 minutes
    python bench/load.py --patients 1000 --patches 1000 --duration 20 --profile /tmp/gw.prof   # where the CPU goes
    python bench/load.py --patients 600 --patches 600 --interval 600 --duration 20 --criticals 6 --binary
    python bench/load.py --decode-bench 3000   # ingress decode per frame, JSON against binary, in one run

`--binary`: the patches send vendor ECG frames (docs/vendor_ecg.md, 510 B for 250 samples) on
`vg/{clinic}/device/{id}/gatt/5a7e0003` instead of JSON (~1.2 kB) on `.../reading`, the same samples.

`--doc` writes the last table into docs/capacity.md's bench block.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simulators.devices import VENDOR_ECG_SLOT, vendor_ecg_payload  # noqa: E402
from simulators.ecg_synthesis import EcgSynth  # noqa: E402
from simulators.stack import free_port, wait_port  # noqa: E402
from stream.models import CHINA_TZ  # noqa: E402

CLINIC = "load"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
STATUS_INTERVAL = "2s"


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def proc_cpu_rss(pid: int, dead_cpu: dict[int, float] | None = None) -> tuple[float, int]:
    """(user+system CPU seconds, RSS bytes) of a process and its descendants, from /proc.

    `dead_cpu` remembers each descendant's last CPU figure, so one that has exited (a worker that was
    restarted) still counts."""
    cpu, rss = 0.0, 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        c = (int(fields[11]) + int(fields[12])) / CLK_TCK
        if dead_cpu is not None:
            dead_cpu[p] = c
        cpu += c
        rss += int(fields[21]) * PAGE
        stack += _children(p)
    if dead_cpu is not None:
        cpu = sum(dead_cpu.values())
    return cpu, rss


def proc_pss(pid: int) -> int:
    """PSS bytes of a process and its descendants (/proc/PID/smaps_rollup): pages shared between
    them (the interpreter, numpy's and scipy's libraries) are counted once in all, where summing RSS
    counts them in every process."""
    pss = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
        stack += _children(p)
    return pss


def proc_cpu(pid: int) -> float:
    """CPU seconds of one process (not its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Result:
    patches: int
    patients: int
    seconds: float
    published: int
    frames_sent: int
    accepted_rate: float  # ECG frames per second, up to the last status of the load
    accepted_total: int
    cpu_pct: float
    rss_max_mb: float
    lat_ms: list[float]
    missing: int
    lag_max_s: float | None
    lag_end_s: float | None
    lagging_seen: bool
    caught_up_after_s: float | None
    analysed: int | None
    workers: int | None
    exit_code: int
    load_before: float = 0.0  # 1-minute load average of the machine when the run started
    cpu_ms_per_frame: float | None = None  # the process tree's CPU from the load's start to caught up, per frame
    main_ms_per_frame: float | None = None  # the gateway process alone (ingest, store, acks, rules, dispatch)
    lag_samples: list[tuple[float, float]] = field(default_factory=list)
    pss_max_mb: float = 0.0  # the tree's proportional set size: shared pages counted once
    binary: bool = False  # the patches sent vendor ECG frames, not JSON

    def lines(self) -> list[str]:
        fmt = "binary vendor frames" if self.binary else "JSON"
        out = [
            f"load: {self.patients} patients (BP+glucose), {self.patches} ECG patches at 250 Hz ({fmt}), "
            f"{self.seconds:.0f} s (machine load average before: {self.load_before:.1f})",
            f"  published {self.published} messages ({self.published / self.seconds:,.0f}/s, ECG frames "
            f"{self.frames_sent / self.seconds:,.0f}/s); gateway accepted {self.accepted_rate:,.0f} frames/s "
            f"during the load, {self.accepted_total} in all",
        ]
        if self.lat_ms:
            out.append(
                f"  critical alert latency (hypoglycemia_severe, publish -> alert on broker): n={len(self.lat_ms)} "
                f"p50 {np.percentile(self.lat_ms, 50):.0f} ms, p99 {np.percentile(self.lat_ms, 99):.0f} ms, "
                f"max {max(self.lat_ms):.0f} ms; missing {self.missing}"
            )
        else:
            out.append(f"  critical alert latency: none arrived; missing {self.missing}")
        if self.lag_max_s is not None:
            catch = (
                f"caught up {self.caught_up_after_s:.0f} s after the load"
                if self.caught_up_after_s is not None
                else "not caught up in the wait"
            )
            out.append(
                f"  ECG analysis: lag max {self.lag_max_s:.1f} s, at the end of the load {self.lag_end_s:.1f} s"
                f"{' (ecg_analysis_lagging reported)' if self.lagging_seen else ''}; {catch}; "
                f"{self.analysed} frames analysed; workers {self.workers}"
            )
        out.append(
            f"  gateway CPU {self.cpu_pct:.0f} % of one core (with its workers), RSS max {self.rss_max_mb:.0f} MB "
            f"(PSS {self.pss_max_mb:.0f} MB); exit {self.exit_code}"
        )
        if self.cpu_ms_per_frame is not None:
            out.append(
                f"  CPU per ECG frame, load start to analysed: {self.cpu_ms_per_frame:.2f} ms with the workers, "
                f"{self.main_ms_per_frame:.2f} ms in the gateway process"
            )
        return out

    def row(self) -> str:
        p = (
            f"p50 {_fmt_ms(np.percentile(self.lat_ms, 50))}, p99 {_fmt_ms(np.percentile(self.lat_ms, 99))}"
            if self.lat_ms
            else "none"
        )
        if self.missing:
            p += f", {self.missing} of {self.missing + len(self.lat_ms)} not seen"
        lag = "-" if self.lag_max_s is None else f"{self.lag_max_s:.0f} s"
        catch = (
            "-"
            if self.lag_max_s is None
            else (f"{self.caught_up_after_s:.0f} s" if self.caught_up_after_s is not None else "no")
        )
        per_frame = (
            "-" if self.cpu_ms_per_frame is None else f"{self.cpu_ms_per_frame:.2f} ms ({self.main_ms_per_frame:.2f})"
        )
        return (
            f"| {self.patches:,} | {self.accepted_rate:,.0f} of {self.frames_sent / self.seconds:,.0f}/s "
            f"| {self.cpu_pct:.0f} % | {per_frame} | {self.rss_max_mb:.0f} MB ({self.pss_max_mb:.0f} MB) | {p} | {lag} | {catch} "
            f"| {self.load_before:.1f} |"
        )


def _fmt_ms(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


TABLE_HEAD = (
    "| patches | ECG frames accepted during the load | gateway CPU (tree) | CPU per frame (gateway process) "
    "| RSS (PSS) of the tree | critical alert latency | ECG analysis lag, max | caught up after the load "
    "| machine load before |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def run_once(
    patients_n: int,
    patches: int,
    duration: float,
    interval: float,
    criticals: int,
    seed: int,
    catch_up: float,
    workers: int | None,
    quiet: bool = False,
    profile: str | None = None,
    binary: bool = False,
) -> Result:
    rng = random.Random(seed)
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="vitalgate-load-"))
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence false\n")
    broker = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)

    patients = []
    for i in range(1, patients_n + 1):
        devs = [{"id": f"bp-{i:04d}", "kind": "blood_pressure"}, {"id": f"glu-{i:04d}", "kind": "glucose"}]
        if i <= patches:
            devs.append({"id": f"ecg-{i:04d}", "kind": "ecg"})
        patients.append({"id": f"p-{i:04d}", "devices": devs})
    import yaml

    cfg = tmp / "gateway.yaml"
    body: dict = {
        "clinic": CLINIC,
        "broker": {"host": "127.0.0.1", "port": port},
        "storage": {"path": str(tmp / "var")},
        "patients": patients,
        "status": {"interval": STATUS_INTERVAL},
    }
    if workers is not None:
        body["shards"] = {"workers": workers}
    cfg.write_text(yaml.safe_dump(body))
    # --profile: the gateway process (not its workers) under cProfile, written when it stops
    prof = ["-m", "cProfile", "-o", str(Path(profile).resolve())] if profile else []
    gw = subprocess.Popen(
        [sys.executable, *prof, "-m", "box.cli", "run", "--config", str(cfg), "--log-level", "WARNING"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "gateway.log", "wb"),
    )

    # The outside observer: alert arrival times and the gateway's status.
    arrivals: dict[str, float] = {}
    status: dict = {}
    status_at = [0.0]  # when the last status arrived
    lags: list[tuple[float, float, str | None]] = []  # (monotonic, lag_s, condition)
    lock = threading.Lock()
    ready = threading.Event()

    def on_message(c, u, msg):  # type: ignore[no-untyped-def]
        now = time.monotonic()
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if msg.topic.endswith("/status"):
            with lock:
                status.clear()
                status.update(body)
                status_at[0] = now
                ea = body.get("ecg_analysis")
                if ea:
                    lags.append((now, float(ea.get("lag_s") or 0.0), ea.get("condition")))
            if body.get("online"):
                ready.set()
            return
        marker = (body.get("evidence") or {}).get("ts")
        if body.get("state") == "firing" and marker and body.get("escalated_from") is None:
            with lock:
                arrivals.setdefault(f"{body['condition']}|{body['patient_id']}|{marker}", now)

    obs = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="load-observer")
    obs.on_message = on_message
    obs.connect("127.0.0.1", port)
    obs.subscribe([(f"vg/{CLINIC}/alert/+", 1), (f"vg/{CLINIC}/status", 1)])
    obs.loop_start()
    if not ready.wait(60):
        raise SystemExit("gateway did not come online; see " + str(tmp / "gateway.log"))

    def publisher(name: str) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        c.max_inflight_messages_set(1000)
        c.connect("127.0.0.1", port)
        c.loop_start()
        return c

    patch_pub = publisher("load-patches")
    meter_pub = publisher("load-meters")

    synths = [EcgSynth(250, seed=i) for i in range(patches)]
    sent: dict[str, float] = {}  # marker -> publish time of the reading that makes a condition true
    published = frames_sent = 0
    dead_cpu: dict[int, float] = {}
    cpu0, _ = proc_cpu_rss(gw.pid, dead_cpu)
    main0 = proc_cpu(gw.pid)
    rss_max = 0
    pss_max = 0
    t_start = time.monotonic()
    base = datetime.now(CHINA_TZ) - timedelta(seconds=duration + 5)
    next_reading = {i: t_start + rng.uniform(0, interval) for i in range(1, patients_n + 1)}
    critical_at = sorted(t_start + rng.uniform(2, duration - 3) for _ in range(criticals))
    # Distinct patients: a second low on a patient with an open alert updates it and is not re-sent.
    pool = list(range(1, patients_n + 1))
    rng.shuffle(pool)
    seq = 0
    second = 0
    accepted_at_end = 0

    def send_criticals(t: float) -> None:
        """The severe lows due by `t` (also between a second's frames: past 2,000 patches the load
        generator itself takes a second or more to send them, and a low must not wait for that)."""
        nonlocal seq, published
        while critical_at and critical_at[0] <= t:
            critical_at.pop(0)
            if not pool:
                continue
            i = pool.pop()
            seq += 1
            ts = (base + timedelta(seconds=t - t_start, microseconds=seq)).isoformat()
            marker = f"hypoglycemia_severe|p-{i:04d}|{ts}"
            sent[marker] = time.monotonic()
            meter_pub.publish(
                f"vg/{CLINIC}/device/glu-{i:04d}/reading",
                json.dumps({"kind": "glucose", "ts": ts, "seq": seq, "mmol_l": 2.4}),
                qos=1,
            )
            published += 1

    while time.monotonic() - t_start < duration:
        tick = t_start + second
        now_dev = base + timedelta(seconds=second)
        # ECG: one frame per patch per second, in real time.
        for k, s in enumerate(synths):
            x = s.frame()
            if binary:  # no time on the wire: the gateway stamps it on arrival and counts on by seq
                patch_pub.publish(
                    f"vg/{CLINIC}/device/ecg-{k + 1:04d}/gatt/{VENDOR_ECG_SLOT}",
                    vendor_ecg_payload(second + 1, 250, [int(v) for v in x], False),
                    qos=1,
                )
            else:
                body = {
                    "kind": "ecg",
                    "ts": now_dev.isoformat(),
                    "seq": second + 1,
                    "fs": 250,
                    "samples_uv": [int(v) for v in x],
                    "lead_off": False,
                }
                patch_pub.publish(f"vg/{CLINIC}/device/ecg-{k + 1:04d}/reading", json.dumps(body), qos=1)
            published += 1
            frames_sent += 1
            if k % 100 == 99:
                send_criticals(time.monotonic())
        while time.monotonic() < tick + 1:
            t = time.monotonic()
            for i, due in next_reading.items():
                if due <= t:
                    seq += 1
                    ts = (base + timedelta(seconds=t - t_start)).isoformat()
                    meter_pub.publish(
                        f"vg/{CLINIC}/device/bp-{i:04d}/reading",
                        json.dumps(
                            {
                                "kind": "blood_pressure",
                                "ts": ts,
                                "seq": seq,
                                "systolic": rng.randint(115, 145),
                                "diastolic": rng.randint(70, 88),
                                "pulse": rng.randint(60, 90),
                            }
                        ),
                        qos=1,
                    )
                    meter_pub.publish(
                        f"vg/{CLINIC}/device/glu-{i:04d}/reading",
                        json.dumps(
                            {"kind": "glucose", "ts": ts, "seq": seq, "mmol_l": round(rng.uniform(4.5, 9.0), 1)}
                        ),
                        qos=1,
                    )
                    published += 2
                    next_reading[i] = due + interval
            send_criticals(t)
            _, rss = proc_cpu_rss(gw.pid)
            rss_max = max(rss_max, rss)
            pss_max = max(pss_max, proc_pss(gw.pid))
            time.sleep(0.005)
        second += 1
    elapsed = time.monotonic() - t_start
    cpu_end, _ = proc_cpu_rss(gw.pid, dead_cpu)
    with lock:
        accepted_at_end = (status.get("counters") or {}).get("accepted", {}).get("ecg", 0)
        accepted_rate = accepted_at_end / max(1e-3, min(status_at[0], t_start + elapsed) - t_start)
        lag_end = lags[-1][1] if lags else None
    # After the load: let the tail arrive, then wait (bounded) for the ECG analysis to catch up.
    time.sleep(3.0)
    caught_up = None
    t_end = time.monotonic()
    if lags:
        while time.monotonic() - t_end < catch_up:
            with lock:
                ea = status.get("ecg_analysis") or {}
            if ea and ea.get("backlog_frames", 1) == 0:
                caught_up = time.monotonic() - t_start - elapsed
                break
            time.sleep(0.5)
            _, rss = proc_cpu_rss(gw.pid)
            rss_max = max(rss_max, rss)
            pss_max = max(pss_max, proc_pss(gw.pid))
    cpu_done, _ = proc_cpu_rss(gw.pid, dead_cpu)
    main_done = proc_cpu(gw.pid)
    lat = sorted((arrivals[m] - t0) * 1000 for m, t0 in sent.items() if m in arrivals)
    missing = [m for m in sent if m not in arrivals]
    with lock:
        analysed = (status.get("ecg_analysis") or {}).get("analysed_frames")
        workers_seen = (status.get("ecg_analysis") or {}).get("workers")
    status.clear()
    gw.send_signal(signal.SIGTERM)
    rc = gw.wait(120)
    deadline = time.monotonic() + 5
    while status.get("online") is not False and time.monotonic() < deadline:  # the final, offline status
        time.sleep(0.05)
    patch_pub.loop_stop()
    meter_pub.loop_stop()
    obs.loop_stop()
    broker.terminate()
    broker.wait()
    accepted_total = (status.get("counters") or {}).get("accepted", {}).get("ecg", 0)
    lag_in_load = [lag for t, lag, _ in lags if t <= t_start + elapsed + 1]
    res = Result(
        patches=patches,
        patients=patients_n,
        seconds=elapsed,
        published=published,
        frames_sent=frames_sent,
        accepted_rate=accepted_rate,
        accepted_total=accepted_total,
        cpu_pct=100 * (cpu_end - cpu0) / elapsed,
        rss_max_mb=rss_max / 2**20,
        pss_max_mb=pss_max / 2**20,
        lat_ms=lat,
        missing=len(missing),
        lag_max_s=max(lag_in_load) if lag_in_load else None,
        lag_end_s=lag_end,
        lagging_seen=any(c for _, _, c in lags),
        caught_up_after_s=caught_up,
        analysed=analysed,
        workers=workers_seen,
        exit_code=rc,
        load_before=load_before,
        cpu_ms_per_frame=1000 * (cpu_done - cpu0) / frames_sent if caught_up is not None and frames_sent else None,
        main_ms_per_frame=1000 * (main_done - main0) / frames_sent if caught_up is not None and frames_sent else None,
        lag_samples=[(round(t - t_start, 1), lag) for t, lag, _ in lags],
        binary=binary,
    )
    if not quiet:
        print("\n".join(res.lines()), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def decode_bench(n: int, repeats: int = 5) -> None:
    """Ingress cost of one ECG frame, JSON against binary, in one process: `decode_message` as the ECG lane
    calls it (topic, device binding, decode, idempotency key; the binary door with its time base), and the
    decoders alone (`_decode_json`'s pydantic fast path against `decode_gatt`). Best of `repeats` passes
    over the same `n` synthetic frames per format, interleaved so machine noise hits both alike."""
    from gateway.ingress import DeviceBinding, DeviceRegistry, _decode_json, decode_gatt, decode_message
    from gateway.vendor_ecg_timing import VendorEcgTimeBase
    from stream.models import DeviceKind

    synth = EcgSynth(250, seed=1)
    frames = [[int(v) for v in synth.frame()] for _ in range(n)]
    t0 = datetime.now(CHINA_TZ)
    js = [
        json.dumps(
            {
                "kind": "ecg",
                "ts": (t0 + timedelta(seconds=k)).isoformat(),
                "seq": k + 1,
                "fs": 250,
                "samples_uv": f,
                "lead_off": False,
            }
        ).encode()
        for k, f in enumerate(frames)
    ]
    bins = [vendor_ecg_payload(k + 1, 250, f, False) for k, f in enumerate(frames)]
    registry = DeviceRegistry([DeviceBinding("ecg-0001", "p-0001", DeviceKind.ECG)])
    t_json, t_bin = f"vg/{CLINIC}/device/ecg-0001/reading", f"vg/{CLINIC}/device/ecg-0001/gatt/{VENDOR_ECG_SLOT}"

    def run_json() -> None:
        for k, p in enumerate(js):
            decode_message(t_json, p, CLINIC, registry, t0 + timedelta(seconds=k))

    def run_bin() -> None:
        tb = VendorEcgTimeBase()
        for k, p in enumerate(bins):
            decode_message(t_bin, p, CLINIC, registry, t0 + timedelta(seconds=k), tb)

    def dec_json() -> None:
        for p in js:
            _decode_json(p, "ecg-0001", t_json)

    def dec_bin() -> None:
        for p in bins:
            decode_gatt("5a7e0003", p, "ecg-0001", t0)

    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, fn in (("json", run_json), ("bin", run_bin), ("dec_json", dec_json), ("dec_bin", dec_bin)):
            t = time.perf_counter()
            fn()
            best[name] = min(best.get(name, float("inf")), (time.perf_counter() - t) / n * 1e6)
    print(
        f"ingress decode per 1-s 250 Hz ECG frame, best of {repeats} x {n} frames "
        f"(payload {sum(map(len, js)) / n:,.0f} B JSON, {len(bins[0])} B binary):"
    )
    print(
        f"  decode_message: JSON {best['json']:.1f} µs, binary {best['bin']:.1f} µs "
        f"-> binary/JSON {best['bin'] / best['json']:.2f}"
    )
    print(
        f"  decoder alone:  _decode_json {best['dec_json']:.1f} µs, decode_gatt {best['dec_bin']:.1f} µs "
        f"-> binary/JSON {best['dec_bin'] / best['dec_json']:.2f}"
    )


def write_doc(table: str, command: str) -> None:
    doc = REPO / "docs" / "capacity.md"
    begin, end = "<!-- bench/load.py: begin -->", "<!-- bench/load.py: end -->"
    text = doc.read_text() if doc.exists() else f"{begin}\n{end}\n"
    import subprocess as sp

    commit = sp.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    block = (
        f"{begin}\n`{command}` ({datetime.now(CHINA_TZ):%Y-%m-%d}, commit {commit}, this 2-core machine with "
        f"Mosquitto and the load generator on it)\n\n{table}\n{end}"
    )
    a, b = text.index(begin), text.index(end) + len(end)
    doc.write_text(text[:a] + block + text[b:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--patches", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between a patient's BP/glucose readings")
    ap.add_argument("--criticals", type=int, default=60, help="critical readings injected over the run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--catch-up",
        type=float,
        default=120.0,
        help="after the load, wait up to this long for the ECG analysis to catch up",
    )
    ap.add_argument("--workers", type=int, default=None, help="shards.workers for the gateway (default: its config's)")
    ap.add_argument(
        "--table",
        default=None,
        help="comma-separated patch counts (patients = patches, BP/glucose every 600 s): one run each, then the table",
    )
    ap.add_argument("--doc", action="store_true", help="write the table into docs/capacity.md")
    ap.add_argument(
        "--profile",
        default=None,
        metavar="FILE",
        help="run the gateway process under cProfile and write its stats to FILE (pstats)",
    )
    ap.add_argument(
        "--binary",
        action="store_true",
        help="patches send binary vendor ECG frames on .../gatt/5a7e0003 instead of JSON",
    )
    ap.add_argument(
        "--decode-bench",
        type=int,
        default=0,
        metavar="N",
        help="only time the ingress decode of N frames, JSON against binary (no broker, no gateway)",
    )
    args = ap.parse_args()
    if args.decode_bench:
        decode_bench(args.decode_bench)
        return
    if not args.table:
        run_once(
            args.patients,
            args.patches,
            args.duration,
            args.interval,
            args.criticals,
            args.seed,
            args.catch_up,
            args.workers,
            profile=args.profile,
            binary=args.binary,
        )
        return
    rows = []
    for n in [int(x) for x in args.table.split(",")]:
        res = run_once(
            n, n, args.duration, 600.0, args.criticals, args.seed, args.catch_up, args.workers, binary=args.binary
        )
        rows.append(res.row())
    table = TABLE_HEAD + "\n" + "\n".join(rows)
    print()
    print(table)
    if args.doc:
        write_doc(table, "python bench/load.py " + " ".join(sys.argv[1:]).replace(" --doc", ""))


if __name__ == "__main__":
    main()
