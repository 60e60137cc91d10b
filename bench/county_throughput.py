"""County-side throughput on this machine: readings/s stored by 1, 2 and 4 `vitalgate county` processes,
and alert latency from a clinic's publish to the county API.

A real 3-node cluster from `vitalgate county-engine`'s configs; N readings from many synthetic
clinics are first published natively (JetStream, `Nats-Msg-Id`, acknowledged by the R3 stream:
the ingest rate is printed too); then for each process count the partitions' consumers are reset
to the start of the stream, the processes start on a fresh county store, and the time until every
reading is in SQLite gives readings/s. Finally, with one process idle, alerts are published one
at a time and the time until `GET /api/alerts` shows each is the alert latency.

    .venv/bin/python bench/county_throughput.py --readings 40000 --processes 1,2,4

docs/county.md quotes its output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import doc_block  # noqa: E402  (bench/, beside this one: --doc)
import nats  # noqa: E402
import yaml  # noqa: E402

from county.engine import UPLINK_STREAM, NatsLog, consumer_name  # noqa: E402
from tests.support.county import CountyProcess, NatsCluster, alert  # noqa: E402

WINDOW = 2000  # publishes in flight


def payload(clinic: str, patient: str, i: int) -> bytes:
    return json.dumps(
        {
            "kind": "blood_pressure",
            "ts": f"2026-03-{1 + i % 28:02d}T07:{(i // 60) % 60:02d}:{i % 60:02d}.000+08:00",
            "seq": i,
            "systolic": 120 + i % 60,
            "diastolic": 80 + i % 20,
            "pulse": 70,
            "unit": "mmHg",
            "status": {"body_movement": False, "irregular_pulse": False, "cuff_loose": False},
            "patient_id": patient,
            "device_id": f"bp-{patient}",
            "received_at": "2026-03-15T07:30:02.000+08:00",
        }
    ).encode()


async def preload(urls: list[str], n: int, clinics: int, patients_per_clinic: int) -> float:
    nc = await nats.connect(servers=urls)
    js = nc.jetstream(timeout=30)
    t0 = time.perf_counter()
    pending = []
    for i in range(n):
        c = f"c{i % clinics:04d}"
        p = f"p{(i // clinics) % patients_per_clinic:05d}"
        pending.append(
            await js.publish_async(
                f"vg.{c}.patient.{p}.reading", payload(c, p, i), headers={"Nats-Msg-Id": f"{c}:{p}:{i}"}, wait_stall=30
            )
        )
        if len(pending) >= WINDOW:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    dt = time.perf_counter() - t0
    await nc.close()
    return n / dt


async def reset_consumers(urls: list[str], partitions: int) -> None:
    nc = await nats.connect(servers=urls)
    js = nc.jetstream(timeout=10)
    for k in range(partitions):
        try:
            await js.delete_consumer(UPLINK_STREAM, consumer_name(k))
        except Exception:  # noqa: BLE001  (not created yet)
            pass
    await nc.close()


def count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def run_processes(cluster: NatsCluster, work: Path, procs: int, n: int) -> dict:
    asyncio.run(reset_consumers(cluster.urls, cluster.cfg["partitions"]))
    storage = work / f"store-{procs}"
    cfg = dict(
        cluster.cfg, storage={"path": str(storage)}, consume={"lease_ttl_s": 3.0, "ack_wait_s": 10.0, "batch": 500}
    )
    path = work / f"county-{procs}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    t0 = time.perf_counter()
    counties = [CountyProcess(path, name=f"bench-{procs}-{i}") for i in range(procs)]
    db = storage / "county.db"
    first = None
    while True:
        got = count(db)
        if got and first is None:
            first = (time.perf_counter(), got)
        if got >= n:
            break
        if time.perf_counter() - t0 > 600:
            raise RuntimeError(f"only {got} of {n} stored after 600 s")
        time.sleep(0.25)
    t1 = time.perf_counter()
    per = [c.health()["counters"]["stored"] for c in counties]
    parts = [len(c.health()["partitions"]) for c in counties]
    for c in counties:
        c.stop()
    steady = (n - first[1]) / (t1 - first[0]) if first and t1 > first[0] else float("nan")
    return {
        "processes": procs,
        "seconds": round(t1 - t0, 1),
        "readings_per_s": round(n / (t1 - t0)),
        "steady_readings_per_s": round(steady),
        "stored_by_process": per,
        "partitions_by_process": parts,
    }


def alert_latency(cluster: NatsCluster, work: Path, backlog: int, n: int = 20) -> list[float]:
    cfg = dict(cluster.cfg, storage={"path": str(work / "store-latency")})
    path = work / "county-latency.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    asyncio.run(reset_consumers(cluster.urls, cluster.cfg["partitions"]))
    county = CountyProcess(path, name="bench-latency")
    county.wait_for(lambda: len(county.health()["partitions"]) == cluster.cfg["partitions"], timeout=60)
    # the backlog of readings is stored first: latency is measured on an idle county
    county.wait_for(lambda: count(work / "store-latency" / "county.db") >= backlog, timeout=300)
    time.sleep(1)
    out = []

    async def one(i: int) -> float:
        nc = await nats.connect(servers=cluster.urls)
        js = nc.jetstream()
        topic, body = alert("lat", f"lat-{i}", "p1")
        t0 = time.perf_counter()
        await js.publish(topic.replace("/", "."), body.encode())
        await nc.close()
        return t0

    for i in range(n):
        t0 = asyncio.run(one(i))
        county.wait_for(
            lambda i=i: any(a["alert_id"] == f"lat-{i}" for a in county.api("/api/alerts?clinic=lat")[1]["alerts"]),
            timeout=60,
        )
        out.append((time.perf_counter() - t0) * 1000)
    county.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=40_000)
    ap.add_argument("--clinics", type=int, default=200)
    ap.add_argument("--patients-per-clinic", type=int, default=1000, help="200 clinics x 1000 = 200,000 patients")
    ap.add_argument("--processes", default="1,2,4")
    ap.add_argument("--doc", action="store_true", help="also write the output into docs/performance.md")
    args = ap.parse_args()
    with doc_block.captured(args.doc, "county_throughput", "python bench/county_throughput.py"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="county-bench-"))
    cluster = NatsCluster(work)
    try:
        log = NatsLog(cluster.urls, cluster.cfg["partitions"])

        async def topology() -> None:
            await log.connect()
            await log.ensure_topology()
            await log.close()

        asyncio.run(topology())
        rate = asyncio.run(preload(cluster.urls, args.readings, args.clinics, args.patients_per_clinic))
        print(
            f"ingest: {args.readings} readings from {args.clinics} clinics published natively into the R3 stream "
            f"at {rate:,.0f}/s (each acknowledged by the stream)",
            flush=True,
        )
        for p in [int(x) for x in args.processes.split(",")]:
            r = run_processes(cluster, work, p, args.readings)
            print(
                f"{p} county process(es): {args.readings} stored in {r['seconds']} s from start = "
                f"{r['readings_per_s']:,}/s ({r['steady_readings_per_s']:,}/s once reading); stored by each "
                f"{r['stored_by_process']}, partitions {r['partitions_by_process']}",
                flush=True,
            )
        lat = alert_latency(cluster, work, args.readings)
        lat.sort()
        print(
            f"alert latency, clinic publish -> county API (idle county, {len(lat)} alerts): median "
            f"{statistics.median(lat):.0f} ms, max {lat[-1]:.0f} ms",
            flush=True,
        )
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
