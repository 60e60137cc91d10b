"""`vitalgate simulate`: play a scenario file against a broker, optionally checking the alerts."""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError

from simulators.scenario import diff_expectations, load_scenario, play, watch_alerts

log = logging.getLogger("vitalgate.simulate")


def _split(broker: str) -> tuple[str, int]:
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--broker must be HOST:PORT, got {broker!r}")
    return host, int(port)


async def simulate(broker: str, clinic: str | None, scenario_path: str, expect: bool) -> int:
    try:
        host, port = _split(broker)
        sc = load_scenario(scenario_path)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"{scenario_path}: {exc}")
        return 2
    clinic = clinic or sc.clinic or "demo-clinic"
    seen: list[dict] = []
    stop, ready = asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(watch_alerts(host, port, clinic, seen, ready, stop)) if expect else None
    if watcher:
        await asyncio.wait_for(ready.wait(), 10)
    sent = await play(sc, host, port, clinic, progress=True)
    log.info("scenario played", extra={"scenario": sc.name, "messages": sent})
    if watcher is None:
        print(f"{sc.name}: published {sent} messages to {host}:{port} (clinic {clinic})")
        return 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max((e.within.total_seconds() for e in sc.expect), default=5.0)
    while diff_expectations(sc.expect, seen) and loop.time() < deadline:
        await asyncio.sleep(0.2)
    stop.set()
    await watcher
    missing = diff_expectations(sc.expect, seen)
    for line in missing:
        print(line)
    print(f"{sc.name}: {len(sc.expect) - len(missing)}/{len(sc.expect)} expected alerts seen")
    return 1 if missing else 0
