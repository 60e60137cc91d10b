"""`vitalgate simulate`: play a scenario file against a broker, optionally checking the alerts."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import ValidationError

from simulators.scenario import Scenario, diff_expectations, load_scenario, play, watch_alerts

if TYPE_CHECKING:
    from simulators.stack import Stack

log = logging.getLogger("vitalgate.simulate")


def _split(broker: str) -> tuple[str, int]:
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--broker must be HOST:PORT, got {broker!r}")
    return host, int(port)


async def simulate(
    broker: str | None, clinic: str | None, scenario_path: str, expect: bool, stack: bool = False
) -> int:
    """Play a scenario; with `expect`, exit 1 and print a diff when the alerts differ.

    `--broker HOST:PORT` plays against a broker (and a gateway) someone else runs. `--stack`
    starts its own: a clinic Mosquitto, a county Mosquitto when the scenario uses the uplink, and
    `vitalgate run` configured from the scenario, so infrastructure events can break them.
    """
    try:
        sc = load_scenario(scenario_path)
        if stack == (broker is not None):
            raise ValueError(
                "give either --broker HOST:PORT (your broker and gateway) or --stack (the simulator "
                "starts Mosquitto and `vitalgate run` itself)"
            )
        if sc.needs_stack and not stack:
            raise ValueError(
                "this scenario breaks infrastructure or checks the county side "
                f"({', '.join(e.describe() for e in sc.infrastructure) or 'uplink'}): "
                "run it with --stack instead of --broker"
            )
        host, port = _split(broker) if broker is not None else ("127.0.0.1", 0)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"{scenario_path}: {exc}")
        return 2
    clinic = clinic or sc.clinic or ("sim" if stack else "demo-clinic")
    if not stack:
        return await _run(sc, host, port, clinic, scenario_path, expect, None)
    from simulators.stack import Stack, StackError

    raw = yaml.safe_load(Path(scenario_path).read_text(encoding="utf-8"))  # noqa: ASYNC240 (once, at start)
    st = Stack(raw, clinic, uplink=sc.has_uplink)
    try:
        await asyncio.to_thread(st.start)
    except StackError as exc:
        print(f"{scenario_path}: could not start the stack: {exc}")
        await asyncio.to_thread(st.close)
        return 2
    try:
        return await _run(sc, "127.0.0.1", st.port, clinic, scenario_path, expect, st)
    finally:
        await asyncio.to_thread(st.close)


async def _run(
    sc: Scenario, host: str, port: int, clinic: str, scenario_path: str, expect: bool, st: Stack | None
) -> int:
    seen: list[dict] = []
    stop, ready = asyncio.Event(), asyncio.Event()
    watcher = (
        asyncio.create_task(watch_alerts(host, port, clinic, seen, ready, stop, persistent=st is not None))
        if expect
        else None
    )
    if watcher:
        await asyncio.wait_for(ready.wait(), 10)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sent = await play(
        sc,
        host,
        port,
        clinic,
        progress=True,
        base_dir=Path(scenario_path).resolve().parent,  # noqa: ASYNC240
        stack=st,
        t0=t0,
    )
    log.info("scenario played", extra={"scenario": sc.name, "messages": sent})
    if watcher is None:
        print(f"{sc.name}: published {sent} messages to {host}:{port} (clinic {clinic})")
        return 0

    def county() -> list[dict]:
        if st is None or st.county is None:
            return []
        out = []
        for topic, payload, _, seen_at in st.county.arrivals():
            if "/alert/" in topic:
                try:
                    out.append({"topic": topic, "_seen_at": seen_at, **json.loads(payload)})
                except ValueError:
                    continue
        return out

    deadline = loop.time() + max((e.within.total_seconds() for e in sc.expect), default=5.0)
    while diff_expectations(sc.expect, seen, county_seen=county()) and loop.time() < deadline:
        await asyncio.sleep(0.2)
    if sc.forbid:
        await asyncio.sleep(1.0)  # give a forbidden alert the chance to show itself
    forwarded = None
    if st is not None and sc.expect_forwarded:
        forwarded = await asyncio.to_thread(st.wait_forwarded, 60.0)
    stop.set()
    await watcher
    problems = diff_expectations(sc.expect, seen, sc.forbid, county_seen=county(), t0=t0, time_scale=sc.time_scale)
    _table(seen)
    if forwarded is not None:
        print(forwarded.line())
        if not forwarded.complete:
            problems.append(
                f"lost on the way to the county: {forwarded.readings_stored - forwarded.readings_forwarded}"
                f" reading(s), {forwarded.alerts_raised - forwarded.alerts_delivered} alert(s)"
            )
    for line in problems:
        print(line)
    print(
        f"{sc.name}: {len(sc.expect) - sum(p.startswith('missing') for p in problems)}/{len(sc.expect)} "
        f"expected alerts seen, {sum(p.startswith('unexpected') for p in problems)} forbidden raised"
    )
    if problems and st is not None:
        print(f"gateway log (last lines):\n{st.gateway.tail(2000)}")
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
