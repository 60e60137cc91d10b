"""How clinics should reach the county: what survives losing one NATS server, MQTT listener vs native.

For each round, on a real 3-node cluster from `vitalgate county-engine`'s configs (streams as
`vitalgate county` creates them), a clinic publishes N readings at a steady pace to server A and
server B (another one) is SIGKILLed a third of the way in; then B is restarted and the stream
is counted for that clinic.

* `mqtt`: today's uplink -- MQTT 3.1.1 QoS 1 through server A's MQTT listener, each message
  counted when its PUBACK arrives (what the gateway's outbox would then forget);
* `nats`: the native uplink (outbound/nats_uplink.py): JetStream publish, `Nats-Msg-Id`, resent
  until the stream acknowledges.

    .venv/bin/python bench/county_node_loss.py --rounds 4 --messages 1500

Prints one line per round (acknowledged to the publisher / stored in the stream) and a summary;
docs/county.md quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import doc_block  # noqa: E402  (bench/, beside this one: --doc)
import nats  # noqa: E402

from county.engine import UPLINK_STREAM, NatsLog  # noqa: E402
from tests.support.county import NativeClinic, NatsCluster, reading  # noqa: E402

PACE_S = 0.003


async def stored(urls: list[str], clinic: str) -> int:
    nc = await nats.connect(servers=urls, connect_timeout=2)
    try:
        js = nc.jetstream(timeout=10)
        for _ in range(30):
            try:
                info = await js.stream_info(UPLINK_STREAM, subjects_filter=f"vgp.*.{clinic}.reading.>")
                return sum((info.state.subjects or {}).values())
            except Exception:  # noqa: BLE001  (a leader election right after the restart)
                await asyncio.sleep(0.5)
        raise RuntimeError("stream info unavailable")
    finally:
        await nc.close()


def mqtt_round(cluster: NatsCluster, clinic: str, a: int, b: int, n: int) -> int:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"vitalgate-{clinic}-uplink", protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", cluster.mqtt_port(a))
    c.loop_start()
    acked = 0
    for i in range(n):
        if i == n // 3:
            cluster.kill(b)
        _, topic, payload = reading(clinic, f"p{i % 20}", i)
        info = c.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(10)
            acked += 1
        except (RuntimeError, ValueError):
            pass
        time.sleep(PACE_S)
    c.loop_stop()
    c.disconnect()
    return acked


def nats_round(cluster: NatsCluster, clinic: str, a: int, b: int, n: int, work: Path) -> int:
    urls = [cluster.urls[a]] + [u for k, u in enumerate(cluster.urls) if k != a]
    up = NativeClinic(clinic, work / clinic, urls)
    for i in range(0, n, 50):
        if i <= n // 3 < i + 50:
            cluster.kill(b)
        up.send([reading(clinic, f"p{j % 20}", j) for j in range(i, min(n, i + 50))])
        time.sleep(PACE_S * 50)
    counts = up.wait_drained(timeout=120)
    up.close()
    return counts["sent"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--messages", type=int, default=1500)
    ap.add_argument("--doc", action="store_true", help="also write the output into docs/performance.md")
    args = ap.parse_args()
    with doc_block.captured(args.doc, "county_node_loss", "python bench/county_node_loss.py"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="county-node-loss-"))
    cluster = NatsCluster(work)
    log = NatsLog(cluster.urls, cluster.cfg["partitions"])

    async def topology() -> None:
        await log.connect()
        await log.ensure_topology()
        await log.close()

    asyncio.run(topology())
    totals = {"mqtt": [0, 0, 0], "nats": [0, 0, 0]}  # acknowledged, stored, rounds with a loss
    try:
        for r in range(args.rounds):
            for way in ("mqtt", "nats"):
                clinic = f"{way}-r{r}"
                a, b = r % 3, (r + 1) % 3
                if way == "mqtt":
                    acked = mqtt_round(cluster, clinic, a, b, args.messages)
                else:
                    acked = nats_round(cluster, clinic, a, b, args.messages, work)
                cluster.start(b)
                cluster.wait_jetstream()
                time.sleep(2.0)
                kept = asyncio.run(stored(cluster.urls, clinic))
                t = totals[way]
                t[0] += acked
                t[1] += kept
                t[2] += kept < acked
                print(
                    f"round {r + 1} {way:4s}: publisher on server {a + 1}, server {b + 1} killed: "
                    f"{acked}/{args.messages} acknowledged, {kept} in the stream"
                    + ("  <-- acknowledged but lost" if kept < acked else ""),
                    flush=True,
                )
    finally:
        cluster.stop()
    for way, (acked, kept, bad) in totals.items():
        print(
            f"{way}: {acked} acknowledged, {kept} stored over {args.rounds} rounds; "
            f"rounds that lost acknowledged messages: {bad}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
