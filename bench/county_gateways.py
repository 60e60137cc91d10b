"""Real clinics into the county: `vitalgate run` gateways, each with its own Mosquitto and simulated
devices, uplinking natively into a 3-node NATS cluster, and one `vitalgate county` process.

Where bench/county_throughput.py measures the county side alone (synthetic publishers straight into
the stream), this measures the whole path a reading takes: device -> clinic Mosquitto -> gateway
(judged, stored, acknowledged) -> uplink outbox -> R3 stream -> county store. Every gateway's
devices send blood-pressure readings at `--rate` per second for `--duration` seconds; every second
one of them also sends a severe low glucose, and the time from that publish on the clinic broker to
the alert being visible (the API polled every 50 ms) in the county's `GET /api/alerts` is the alert latency. At the end: every
reading sent is stored at the county once (the bench fails otherwise), the end-to-end rate, and the
gateways' CPU.

    .venv/bin/python bench/county_gateways.py --gateways 3 --rate 200 --duration 30

Everything shares this machine's two cores: 3 nats-servers, the county, and per clinic a Mosquitto,
a gateway and a device publisher.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import doc_block  # noqa: E402  (bench/, beside this one: --doc)
import paho.mqtt.client as mqtt  # noqa: E402
import yaml  # noqa: E402
from load import proc_cpu  # noqa: E402  (bench/load.py: one process's CPU seconds from /proc)

from stream.models import CHINA_TZ  # noqa: E402
from tests.support.county import CountyProcess, NatsCluster, SubjectLog, county_config_for  # noqa: E402
from tests.support.store_forward import PersistentMosquitto  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def gateway_config(work: Path, clinic: str, port: int, patients: int, uplink: dict) -> Path:
    cfg = {
        "clinic": clinic,
        "broker": {"host": "127.0.0.1", "port": port},
        "storage": {"path": str(work / "var")},
        "patients": [
            {
                "id": f"p-{i:04d}",
                "labels": {"village": f"{clinic}-v{i % 3}"},
                "devices": [{"id": f"bp-{i:04d}", "kind": "blood_pressure"}, {"id": f"glu-{i:04d}", "kind": "glucose"}],
            }
            for i in range(1, patients + 1)
        ],
        "status": {"interval": "2s"},
        **uplink,
    }
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Devices:
    """One clinic's devices: BP readings at `rate`/s, QoS 1, acknowledged by the clinic broker."""

    def __init__(self, clinic: str, port: int, patients: int) -> None:
        self.clinic, self.patients = clinic, patients
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-devices-{clinic}")
        self.client.max_inflight_messages_set(200)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent = 0
        self.start = datetime.now(CHINA_TZ) - timedelta(hours=2)

    def ts(self, i: int) -> str:
        return (self.start + timedelta(seconds=i * 0.5)).isoformat(timespec="milliseconds")

    def run(self, rate: float, duration: float) -> None:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < duration:
            p = i % self.patients + 1
            body = {
                "kind": "blood_pressure",
                "ts": self.ts(i // self.patients),
                "seq": i,
                "systolic": 118 + i % 20,
                "diastolic": 76 + i % 8,
                "pulse": 70,
                "unit": "mmHg",
                "status": {"body_movement": False},
            }
            self.client.publish(f"vg/{self.clinic}/device/bp-{p:04d}/reading", json.dumps(body), qos=1)
            i += 1
            ahead = i / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        self.sent = i

    def severe_low(self, patient: int, seq: int) -> None:
        body = {
            "kind": "glucose",
            "ts": datetime.now(CHINA_TZ).isoformat(timespec="milliseconds"),
            "seq": seq,
            "mmol_l": 2.3,
            "meal": "fasting",
        }
        self.client.publish(
            f"vg/{self.clinic}/device/glu-{patient:04d}/reading", json.dumps(body), qos=1
        ).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class ClinicAlerts:
    """When each severe-low alert appears on a clinic broker (the gateway's own delivery)."""

    def __init__(self, clinic: str, port: int) -> None:
        self.at: dict[str, float] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-watch-{clinic}")

        def got(c, u, msg) -> None:  # type: ignore[no-untyped-def]
            a = json.loads(msg.payload)
            if a.get("condition") == "hypoglycemia_severe":
                self.at.setdefault(f"{clinic}/{a['patient_id']}", time.monotonic())

        self.client.on_message = got
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(f"vg/{clinic}/alert/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def pct(values: list[float]) -> str:
    v = sorted(values)
    return f"median {statistics.median(v):.0f} ms, p90 {v[int(0.9 * (len(v) - 1))]:.0f} ms, max {v[-1]:.0f} ms"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateways", type=int, default=3)
    ap.add_argument("--patients", type=int, default=100, help="per clinic")
    ap.add_argument("--rate", type=float, default=200.0, help="BP readings per second per clinic")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--doc", action="store_true", help="also write the output into docs/performance.md")
    args = ap.parse_args()
    with doc_block.captured(args.doc, "county_gateways", "python bench/county_gateways.py"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="county-gateways-"))
    (work / "cluster").mkdir()
    cluster = NatsCluster(work / "cluster")
    brokers, gateways, devices = [], [], []
    county = CountyProcess(county_config_for(cluster, work))
    try:
        county.wait_for(lambda: county.health()["ready"], what="the county ready")
        for g in range(args.gateways):
            clinic = f"bench{g + 1}"
            gdir = work / clinic
            gdir.mkdir()
            brokers.append(PersistentMosquitto(gdir, "clinic"))
            uplink = yaml.safe_load((cluster.engine_dir / f"uplink-{g % 3 + 1}.yaml").read_text())
            cfg = gateway_config(gdir, clinic, brokers[-1].port, args.patients, uplink)
            log = open(gdir / "gateway.log", "ab")
            gateways.append(
                subprocess.Popen(
                    [sys.executable, "-m", "box.cli", "run", "--config", str(cfg), "--log-level", "WARNING"],
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        time.sleep(3.0)  # sessions and subscriptions in place
        devices = [Devices(f"bench{g + 1}", b.port, args.patients) for g, b in enumerate(brokers)]
        watchers = [ClinicAlerts(f"bench{g + 1}", b.port) for g, b in enumerate(brokers)]
        print(
            f"{args.gateways} gateways (vitalgate run, native uplink), {args.patients} patients each, "
            f"{args.rate:g} BP readings/s per clinic for {args.duration:g} s; 1 county process",
            flush=True,
        )

        # When each alert reaches the cluster (a plain subscription): splits the latency into the clinic's
        # part (judge, alert outbox, uplink) and the county's (consume, store, API).
        alerts_log = SubjectLog(cluster.urls[0], "vgp.*.*.alert.>")
        cpu0 = [proc_cpu(p.pid) for p in gateways]
        county_cpu0 = proc_cpu(county.proc.pid)
        t0 = time.monotonic()
        senders = [threading.Thread(target=d.run, args=(args.rate, args.duration), daemon=True) for d in devices]
        for s in senders:
            s.start()
        # One severe low a second, from a random clinic and patient: publish -> visible at the county.
        rng = random.Random(7)
        pending: dict[str, float] = {}
        published: dict[str, float] = {}
        used: set[str] = set()  # one severe low per patient: a second would find the first alert still open
        latencies: list[float] = []
        seq = 1_000_000
        last_low = 0.0
        while any(s.is_alive() for s in senders) or pending:
            loading = any(s.is_alive() for s in senders)
            if loading and time.monotonic() - last_low >= 1.0:
                g, p = rng.randrange(args.gateways), rng.randrange(1, args.patients + 1)
                key = f"bench{g + 1}/p-{p:04d}"
                if key not in used:
                    used.add(key)
                    seq += 1
                    devices[g].severe_low(p, seq)
                    pending[key] = published[key] = last_low = time.monotonic()
            if pending:
                _, body = county.api("/api/alerts?limit=5000")
                now = time.monotonic()
                for a in body.get("alerts", []):
                    key = f"{a['clinic']}/{a['patient_id']}"
                    if key in pending and a["condition"] == "hypoglycemia_severe":
                        latencies.append((now - pending.pop(key)) * 1000)
            if time.monotonic() - t0 > args.duration + 120:
                raise RuntimeError(f"alerts never seen at the county: {sorted(pending)}")
            time.sleep(0.05)
        for s in senders:
            s.join()
        sent = sum(d.sent for d in devices)
        stored = 0
        while True:
            stored = county.health()["counters"]["stored"] - len(used)  # the severe lows are readings too
            if stored >= sent or time.monotonic() - t0 > args.duration + 300:
                break
            time.sleep(0.25)
        t_all = time.monotonic() - t0
        gw_cpu = [proc_cpu(p.pid) - c for p, c in zip(gateways, cpu0)]
        county_cpu = proc_cpu(county.proc.pid) - county_cpu0
        print(
            f"sent {sent:,} BP readings ({sent / args.duration:,.0f}/s over {args.duration:g} s); stored at the "
            f"county {stored:,} (+{len(used)} glucose), all in {t_all:.1f} s from the first publish = "
            f"{sent / t_all:,.0f}/s end to end",
            flush=True,
        )
        print(f"county duplicates discarded: {county.health()['counters']['duplicates']}", flush=True)
        alerts_log.close()
        at_stream: dict[str, float] = {}
        for (subject, data), t in zip(alerts_log.subjects, alerts_log.arrived):
            a = json.loads(data)
            key = f"{subject.split('.')[2]}/{a['patient_id']}"
            if a.get("condition") == "hypoglycemia_severe" and key in published:
                at_stream.setdefault(key, (t - published[key]) * 1000)
        at_clinic = {k: (t - published[k]) * 1000 for w in watchers for k, t in w.at.items() if k in published}
        for w in watchers:
            w.close()
        if at_clinic:
            print(
                f"  reading published -> alert on the clinic broker (the gateway): {pct(list(at_clinic.values()))}",
                flush=True,
            )
        if at_stream:
            print(
                f"  reading published -> alert on the county cluster (+ the uplink): {pct(list(at_stream.values()))}",
                flush=True,
            )
        lat = sorted(latencies)
        print(
            f"alert latency, severe low published on a clinic broker -> visible in the county API while "
            f"loaded ({len(lat)} alerts, the API polled every 50 ms): median {statistics.median(lat):.0f} ms, "
            f"p90 {lat[int(0.9 * (len(lat) - 1))]:.0f} ms, max {lat[-1]:.0f} ms",
            flush=True,
        )
        print(
            f"CPU over the run: gateways {', '.join(f'{c:.1f} s' for c in gw_cpu)} "
            f"({sum(gw_cpu) / t_all * 100 / args.gateways:.0f} % of a core each), county {county_cpu:.1f} s "
            f"({county_cpu / t_all * 100:.0f} %); load average at the end {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores",
            flush=True,
        )
        if stored != sent:
            print(f"FAILED: sent {sent}, stored {stored}", flush=True)
            return 1
    finally:
        for d in devices:
            d.close()
        for p in gateways:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        county.stop()
        for b in brokers:
            b.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
