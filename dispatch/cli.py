"""Dispatcher commands for the `vitalgate` command line.

- `vitalgate routes test --condition X --patient P [--config PATH] [--severity S] [--tier T] [--at HH:MM]`
  prints where an alert would go: the route nodes that matched, tier and
  severity, MQTT topics, channels, the escalation ladder with its timeouts,
  repeats, what could hold it (inhibit rules, silences) and whether it latches.

(`vitalgate alerts report`, the alarm-fatigue report, is on the read side: console/commands.py.)
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from dispatch.dispatcher import DispatchConfig
from dispatch.routing import LATCHING, MatchContext, RoutingTable
from dispatch.suppression import DEFAULT_INHIBIT_RULES
from stream.models import Alert, Condition, Finding, Severity, Tier, format_seconds, now_local


class _Storage(Protocol):
    @property
    def path(self) -> Path: ...


class RoutesConfig(DispatchConfig, Protocol):
    """What `routes test` reads of the gateway config: the dispatcher's part, and where alerts.db is."""

    @property
    def storage(self) -> _Storage: ...


# The command line's config loader (box/cli.py): the file at PATH, or the built-in defaults for None;
# None when the file has problems (they are printed).
LoadConfig = Callable[[str | None], RoutesConfig | None]


def _at(text: str | None) -> datetime:
    now = now_local()
    if not text:
        return now
    try:
        hh, mm = text.split(":")
        return now.replace(hour=int(hh), minute=int(mm), second=0, microsecond=0)
    except ValueError:
        raise SystemExit(f"--at wants clinic time HH:MM, not {text!r}") from None


def cmd_routes_test(args: argparse.Namespace, load: LoadConfig) -> int:
    cfg = load(args.config)
    if cfg is None:
        return 2
    try:
        condition = Condition(args.condition)
    except ValueError:
        print(f"unknown condition {args.condition!r}; one of: {', '.join(c.value for c in Condition)}", file=sys.stderr)
        return 2
    labels = {p.id: dict(p.labels) for p in cfg.patients}
    if args.config and cfg.patients and args.patient not in labels:
        print(f"patient {args.patient!r} is not in {args.config} (patients: {', '.join(labels)})", file=sys.stderr)
        return 2
    routing = RoutingTable(dict(cfg.routes), tree=cfg.routing, labels=labels)
    at = _at(args.at)
    f = Finding(
        patient_id=args.patient,
        condition=condition,
        at=at,
        severity=Severity(args.severity) if args.severity else None,
        tier=Tier(args.tier) if args.tier else None,
    )
    d = routing.decide(f, at)
    esc = cfg.escalation
    lab = labels.get(args.patient, {})
    print(
        f"{condition.value} for patient {args.patient}"
        f" (labels: {', '.join(f'{k}={v}' for k, v in lab.items()) or 'none'}) at {at:%H:%M} clinic time"
    )
    print("  matched:")
    for p in d.path:
        print(f"    {p}")
    print(
        f"  opens at: {d.tier.value}, severity {d.severity.value}"
        f"{' (latches until acknowledged)' if d.severity in LATCHING else ''}"
    )
    audience = esc.audience(d.tier)
    print("  MQTT: " + ", ".join(f"vg/{cfg.clinic}/alert/{t.value}" for t in audience))
    ctx = MatchContext(condition, d.severity, d.tier, args.patient, lab, at)
    chans = [c for c in cfg.channels if (set(c.tiers) & set(audience) or c.name in d.channels) and c.match.matches(ctx)]
    if chans:
        print(
            f"  channels (grouped per patient and tier; group_wait {format_seconds(d.group_wait.total_seconds())},"
            f" group_interval {format_seconds(d.group_interval.total_seconds())}):"
        )
        for c in chans:
            print(f"    {c.name}: {c.describe()}")
    else:
        print("  channels: none besides MQTT")
    # The ladder, rung by rung, as the dispatcher would climb it.
    a = Alert(
        alert_id="x",
        patient_id=args.patient,
        clinic=cfg.clinic,
        tier=d.tier,
        condition=condition,
        severity=d.severity,
        opened_at=at,
        updated_at=at,
    )
    ladder = [d.tier.value]
    seen = {d.tier}
    while (step := esc.next_step(a)) is not None and step[1] not in seen:
        ladder.append(f"--{format_seconds(step[0].total_seconds())}--> {step[1].value}")
        seen.add(step[1])
        a = a.model_copy(update={"tier": step[1]})
    top_extra = [t.value for t in esc.audience(a.tier)[1:]]
    if d.follow_up:
        print("  escalation: none (follow-up of a back-filled reading)")
    else:
        print(
            f"  escalation if nobody acknowledges: {' '.join(ladder)}"
            f"{' (+ ' + ', '.join(top_extra) + ')' if top_extra else ''}"
        )
        print(
            f"  repeats while firing and unacknowledged: every {format_seconds(d.repeat_interval.total_seconds())}"
            f" (at the top: every {format_seconds(min(d.repeat_interval, esc.repeat_interval).total_seconds())})"
        )
    rules = DEFAULT_INHIBIT_RULES if cfg.inhibit_rules is None else cfg.inhibit_rules
    held_by = [r.source.describe() for r in rules if r.target.matches(ctx)]
    if held_by:
        print("  held (inhibited) while the patient has an active alert matching: " + "; ".join(held_by))
    from dispatch.alert_store import FILE_NAME, AlertQueries

    stored = AlertQueries(cfg.storage.path / FILE_NAME)
    try:
        silences = [s for s in stored.silences() if s.holds(ctx)]
    finally:
        stored.close()
    for spec in cfg.silences:
        from dispatch.suppression import config_silence_id

        if spec.match.matches(ctx) and (d.severity is not Severity.CRITICAL or spec.include_critical):
            if all(s.id != config_silence_id(spec) for s in silences):
                print(f"  silenced by config silence {config_silence_id(spec)} when active: {spec.why}")
    for s in silences:
        print(f"  SILENCED NOW by {s.id} ({s.created_by}: {s.why}) until {s.ends_at or 'expired'}")
    return 0


def add_dispatch_commands(sub: argparse._SubParsersAction, load: LoadConfig) -> None:
    routes = sub.add_parser("routes", help="routing tools: where would an alert go")
    rsub = routes.add_subparsers(dest="routes_cmd", required=True)
    t = rsub.add_parser("test", help="print where an alert for CONDITION and PATIENT would go")
    t.add_argument("--condition", required=True)
    t.add_argument("--patient", required=True)
    t.add_argument("--config", default=None, help="gateway config (default: the built-in defaults)")
    t.add_argument("--severity", choices=[s.value for s in Severity], default=None, help="as the finding asks")
    t.add_argument("--tier", choices=[s.value for s in Tier], default=None, help="as the finding asks")
    t.add_argument("--at", default=None, help="clinic time HH:MM (time_of_day matchers); default now")
    t.set_defaults(fn=functools.partial(cmd_routes_test, load=load))
