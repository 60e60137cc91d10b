"""Does the embedded amqtt broker hold the demo's load?

Measures QoS 1 throughput of 1-s ECG JSON frames (250 samples) through amqtt,
one aiomqtt publisher -> one aiomqtt subscriber, and compares it with the
demo's peak load (ECG patches at the demo's x10 device clock plus BP/glucose).

    python bench/demo_broker.py [--messages 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiomqtt
import numpy as np

from box.demo import TIME_SCALE, demo_config, free_port, start_embedded_broker


async def main(n: int) -> None:
    port = free_port()
    broker = await start_embedded_broker(port)
    frame = json.dumps(
        {
            "kind": "ecg",
            "ts": "2026-01-01T00:00:00+08:00",
            "seq": 1,
            "fs": 250,
            "samples_uv": [int(v) for v in np.random.default_rng(0).normal(0, 300, 250)],
            "lead_off": False,
        }
    ).encode()
    got = 0
    done = asyncio.Event()
    async with (
        aiomqtt.Client("127.0.0.1", port, identifier="bench-sub") as sub,
        aiomqtt.Client("127.0.0.1", port, identifier="bench-pub") as pub,
    ):
        await sub.subscribe("bench/#", qos=1)

        async def consume() -> None:
            nonlocal got
            async for _ in sub.messages:
                got += 1
                if got >= n:
                    done.set()
                    return

        task = asyncio.create_task(consume())
        t0 = time.perf_counter()
        window = 200  # bounded in-flight window
        pending: set[asyncio.Task] = set()
        for _ in range(n):
            pending.add(asyncio.create_task(pub.publish("bench/ecg", frame, qos=1)))
            if len(pending) >= window:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*pending)
        await asyncio.wait_for(done.wait(), 120)
        dt = time.perf_counter() - t0
        task.cancel()
    try:
        await broker.shutdown()
    except asyncio.CancelledError:
        pass
    rate = n / dt
    cfg = demo_config(port, 8, __import__("pathlib").Path("/tmp"))
    patches = sum(1 for p in cfg.patients for d in p.devices if d.kind.value == "ecg")
    demo_peak = patches * TIME_SCALE + len(cfg.patients) * 2 * TIME_SCALE / 150  # frames + BP/glucose per s
    print(f"amqtt QoS1, {len(frame)} B ECG JSON frames: {n} in {dt:.2f} s = {rate:,.0f} msg/s")
    print(
        f"demo peak load (8 patients, {patches} patches at x{TIME_SCALE:g}): ~{demo_peak:,.0f} msg/s "
        f"-> headroom x{rate / demo_peak:,.0f}"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=3000)
    asyncio.run(main(ap.parse_args().messages))
