"""`vitalgate simulate`: play a scenario file against a broker, optionally checking the alerts."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

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
    sent = await play(sc, host, port, clinic, progress=True, base_dir=Path(scenario_path).resolve().parent)
    log.info("scenario played", extra={"scenario": sc.name, "messages": sent})
    if watcher is None:
        print(f"{sc.name}: published {sent} messages to {host}:{port} (clinic {clinic})")
        return 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max((e.within.total_seconds() for e in sc.expect), default=5.0)
    while diff_expectations(sc.expect, seen) and loop.time() < deadline:
        await asyncio.sleep(0.2)
    if sc.forbid:
        await asyncio.sleep(1.0)  # give a forbidden alert the chance to show itself
    stop.set()
    await watcher
    problems = diff_expectations(sc.expect, seen, sc.forbid)
    _table(seen)
    for line in problems:
        print(line)
    print(f"{sc.name}: {len(sc.expect) - sum(p.startswith('missing') for p in problems)}/{len(sc.expect)} "
          f"expected alerts seen, {sum(p.startswith('unexpected') for p in problems)} forbidden raised")
    return 1 if problems else 0


def _table(seen: list[dict]) -> None:
    """Summary of the alerts that came out, one row per (condition, tier, state)."""
    from collections import Counter

    rows = Counter((a.get("condition"), a.get("topic", "").rsplit("/", 1)[-1], a.get("state")) for a in seen)
    if not rows:
        print("no alerts seen")
        return
    print(f"{'condition':<22} {'tier topic':<11} {'state':<13} count")
    for (cond, tier, state), n in sorted(rows.items()):
        print(f"{cond:<22} {tier:<11} {state:<13} {n}")
