"""Load and alert latency: N simulated patients against a running gateway on a real Mosquitto.

Starts Mosquitto on a free loopback port and `vitalgate run` as a child
process, then for `--duration` seconds publishes:
  * BP and glucose readings for `--patients` patients (each every `--interval` s),
  * 1-s ECG frames (250 Hz JSON) from `--patches` patches in real time,
  * critical readings (severe hypoglycaemia, and a confirming crisis BP) at random moments.
Alert latency is measured from the publish of the reading that makes the
condition true to the alert's arrival on the broker (an outside subscriber,
as the county center sees it). The gateway's CPU and RSS come from /proc.

    python bench/load.py                       # 200 patients + 50 patches, 60 s
    python bench/load.py --patients 50 --patches 10 --duration 20
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
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simulators.ecg_synthesis import EcgSynth  # noqa: E402
from simulators.stack import free_port, wait_port  # noqa: E402
from stream.models import CHINA_TZ  # noqa: E402

CLINIC = "load"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_cpu_rss(pid: int) -> tuple[float, int]:
    """(user+system CPU seconds, RSS bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = int(fields[21]) * PAGE
    return cpu, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--patches", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between a patient's BP/glucose readings")
    ap.add_argument("--criticals", type=int, default=60, help="critical readings injected over the run")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    tmp = Path(tempfile.mkdtemp(prefix="vitalgate-load-"))
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence false\n")
    broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)

    patients = []
    for i in range(1, args.patients + 1):
        devs = [{"id": f"bp-{i:04d}", "kind": "blood_pressure"}, {"id": f"glu-{i:04d}", "kind": "glucose"}]
        if i <= args.patches:
            devs.append({"id": f"ecg-{i:04d}", "kind": "ecg"})
        patients.append({"id": f"p-{i:04d}", "devices": devs})
    import yaml

    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump({"clinic": CLINIC, "broker": {"host": "127.0.0.1", "port": port},
                                   "storage": {"path": str(tmp / "var")}, "patients": patients}))
    gw = subprocess.Popen([sys.executable, "-m", "box.cli", "run", "--config", str(cfg), "--log-level", "WARNING"],
                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp / "gateway.log", "wb"))

    # The outside observer: alert arrival times and the gateway's status.
    arrivals: dict[str, float] = {}
    status: dict = {}
    lock = threading.Lock()
    ready = threading.Event()

    def on_message(c, u, msg):  # type: ignore[no-untyped-def]
        now = time.monotonic()
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if msg.topic.endswith("/status"):
            status.update(body)
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
    if not ready.wait(30):
        raise SystemExit("gateway did not come online; see " + str(tmp / "gateway.log"))

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="load-devices")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()

    synths = [EcgSynth(250, seed=i) for i in range(args.patches)]
    sent: dict[str, float] = {}  # marker -> publish time of the reading that makes a condition true
    published = 0
    cpu0, _ = proc_cpu_rss(gw.pid)
    rss_max = 0
    t_start = time.monotonic()
    base = datetime.now(CHINA_TZ) - timedelta(seconds=args.duration + 5)
    next_reading = {i: t_start + rng.uniform(0, args.interval) for i in range(1, args.patients + 1)}
    critical_at = sorted(t_start + rng.uniform(2, args.duration - 3) for _ in range(args.criticals))
    # Distinct patients: a second low on a patient with an open alert updates it and is not re-sent.
    pool = list(range(args.patches + 1, args.patients + 1)) or list(range(1, args.patients + 1))
    rng.shuffle(pool)
    seq = 0
    second = 0
    while time.monotonic() - t_start < args.duration:
        tick = t_start + second
        now_dev = base + timedelta(seconds=second)
        # ECG: one frame per patch per second, in real time.
        for k, s in enumerate(synths):
            x = s.frame()
            body = {"kind": "ecg", "ts": now_dev.isoformat(), "seq": second + 1, "fs": 250,
                    "samples_uv": [int(v) for v in x], "lead_off": False}
            pub.publish(f"vg/{CLINIC}/device/ecg-{k + 1:04d}/reading", json.dumps(body), qos=1)
            published += 1
        while time.monotonic() < tick + 1:
            t = time.monotonic()
            for i, due in next_reading.items():
                if due <= t:
                    seq += 1
                    ts = (base + timedelta(seconds=t - t_start)).isoformat()
                    pub.publish(f"vg/{CLINIC}/device/bp-{i:04d}/reading", json.dumps(
                        {"kind": "blood_pressure", "ts": ts, "seq": seq, "systolic": rng.randint(115, 145),
                         "diastolic": rng.randint(70, 88), "pulse": rng.randint(60, 90)}), qos=1)
                    pub.publish(f"vg/{CLINIC}/device/glu-{i:04d}/reading", json.dumps(
                        {"kind": "glucose", "ts": ts, "seq": seq, "mmol_l": round(rng.uniform(4.5, 9.0), 1)}), qos=1)
                    published += 2
                    next_reading[i] = due + args.interval
            while critical_at and critical_at[0] <= t:
                critical_at.pop(0)
                if not pool:
                    continue
                i = pool.pop()
                seq += 1
                ts = (base + timedelta(seconds=t - t_start, microseconds=seq)).isoformat()
                marker = f"hypoglycemia_severe|p-{i:04d}|{ts}"
                sent[marker] = time.monotonic()
                pub.publish(f"vg/{CLINIC}/device/glu-{i:04d}/reading",
                            json.dumps({"kind": "glucose", "ts": ts, "seq": seq, "mmol_l": 2.4}), qos=1)
                published += 1
            _, rss = proc_cpu_rss(gw.pid)
            rss_max = max(rss_max, rss)
            time.sleep(0.005)
        second += 1
    elapsed = time.monotonic() - t_start
    time.sleep(3.0)  # let the tail arrive
    cpu1, rss = proc_cpu_rss(gw.pid)
    rss_max = max(rss_max, rss)
    lat = sorted(arrivals[m] - t0 for m, t0 in sent.items() if m in arrivals)
    missing = [m for m in sent if m not in arrivals]
    status.clear()
    gw.send_signal(signal.SIGTERM)
    rc = gw.wait(60)
    deadline = time.monotonic() + 5
    while status.get("online") is not False and time.monotonic() < deadline:  # the final, offline status
        time.sleep(0.05)
    pub.loop_stop()
    obs.loop_stop()
    broker.terminate()
    broker.wait()
    accepted = sum((status.get("counters") or {}).get("accepted", {}).values())
    print(f"load: {args.patients} patients (BP+glucose every {args.interval:g} s), {args.patches} ECG patches at 250 Hz, "
          f"{elapsed:.0f} s")
    rejected = (status.get("counters") or {}).get("rejected", {})
    print(f"  published {published} messages ({published / elapsed:,.0f}/s); gateway accepted {accepted} "
          f"({accepted / elapsed:,.0f}/s), rejected {rejected or 0}")
    if lat:
        print(f"  critical alert latency (hypoglycemia_severe, publish -> alert on broker): n={len(lat)} "
              f"p50 {np.percentile(lat, 50) * 1000:.0f} ms, p99 {np.percentile(lat, 99) * 1000:.0f} ms, "
              f"max {max(lat) * 1000:.0f} ms; missing {len(missing)}")
    print(f"  gateway CPU {100 * (cpu1 - cpu0) / elapsed:.0f} % of one core, RSS max {rss_max / 2**20:.0f} MB; "
          f"exit {rc}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
