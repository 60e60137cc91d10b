"""The alarm-fatigue report (`vitalgate alerts report`): what the dispatcher asked of people, from its audit trail.

Read-only over `alerts.db` through the alert store's own queries (safe while the gateway runs). Per rule
(condition): how many alarms were raised, how many were held (inhibited,
silenced, snoozed), escalated, repeated, acknowledged, and how many cleared
before anyone acknowledged them; per patient; the delay from an alert
reaching a tier to its acknowledgement, per tier; escalations by rung; and
channel deliveries. Times are clinic time (+08:00).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from dispatch.alert_store import AlertQueries
from stream.models import Tier, format_seconds, iso

_REACH = ("raised", "upgraded", "escalated", "released")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def build_report(db_path: Path, since: timedelta, now: datetime) -> dict[str, Any]:
    cutoff = iso(now - since)
    store = AlertQueries(db_path)
    try:
        rows = store.audit_trail(now - since)
        chan_rows = store.channel_totals(now - since)
        silences_created = store.silences_created(now - since)
    finally:
        store.close()

    per_rule: dict[str, Counter] = defaultdict(Counter)
    per_patient: dict[str, Counter] = defaultdict(Counter)
    ack_delays: dict[str, list[float]] = defaultdict(list)
    rule_ack: dict[str, list[float]] = defaultdict(list)
    escalations: Counter = Counter()
    reached: dict[tuple[str, str], datetime] = {}
    acked: set[str] = set()
    holds: Counter = Counter()
    for alert_id, at_s, what, detail_s, patient, condition, tier in rows:
        at = datetime.fromisoformat(at_s)
        detail = json.loads(detail_s)
        in_period = at_s >= cutoff
        if what in _REACH and tier:
            reached.setdefault((alert_id, tier), at)
        if what == "escalated" and detail.get("to"):
            reached.setdefault((alert_id, detail["to"]), at)
        if not in_period:
            if what == "acknowledged":
                acked.add(alert_id)
            continue
        if what == "raised":
            per_rule[condition]["raised"] += 1
            per_patient[patient][condition] += 1
            if detail.get("held"):
                per_rule[condition]["held"] += 1
                holds[detail["held"].split(":")[0]] += 1
        elif what == "held":
            holds[str(detail.get("by", "")).split(":")[0]] += 1
            per_rule[condition]["held"] += 1
        elif what == "snoozed":
            holds["snooze"] += 1
            per_rule[condition]["snoozed"] += 1
        elif what == "escalated":
            per_rule[condition]["escalated"] += 1
            escalations[(detail.get("from"), detail.get("to"))] += 1
        elif what == "repeated":
            per_rule[condition]["repeated"] += 1
        elif what == "acknowledged":
            acked.add(alert_id)
            per_rule[condition]["acknowledged"] += 1
            if tier:
                start = reached.get((alert_id, tier))
                if start is not None:
                    delay = (at - start).total_seconds()
                    ack_delays[tier].append(delay)
                    rule_ack[condition].append(delay)
        elif what == "resolved":
            if alert_id not in acked:
                per_rule[condition]["cleared_unacknowledged"] += 1

    def ack_summary(values: list[float]) -> dict[str, Any]:
        return {
            "n": len(values),
            "median_s": statistics.median(values) if values else None,
            "p90_s": _pct(values, 0.9),
            "max_s": max(values) if values else None,
        }

    return {
        "from": cutoff,
        "to": iso(now),
        "rules": {
            c: {**dict(v), "median_ack_s": statistics.median(rule_ack[c]) if rule_ack[c] else None}
            for c, v in sorted(per_rule.items(), key=lambda kv: -kv[1]["raised"])
        },
        "patients": {
            p: {"raised": sum(v.values()), "by_condition": dict(v.most_common())}
            for p, v in sorted(per_patient.items(), key=lambda kv: -sum(kv[1].values()))
        },
        "ack_delay": {t.value: ack_summary(ack_delays[t.value]) for t in Tier if ack_delays.get(t.value)},
        "escalations": [{"from": f, "to": t, "n": n} for (f, t), n in escalations.most_common()],
        "holds": dict(holds),
        "silences_created": silences_created,
        "channels": {c: {"deliveries": n, "delivered": ok, "attempts": att} for c, n, ok, att in chan_rows},
    }


def format_report(r: dict[str, Any], clinic: str) -> str:
    out = [f"alarm-fatigue report, clinic {clinic}, {r['from']} .. {r['to']}", ""]
    rules = r["rules"]
    total = sum(v.get("raised", 0) for v in rules.values())
    out.append(f"alarms per rule ({total} raised)")
    if rules:
        out.append(
            f"  {'condition':<22}{'raised':>7}{'held':>6}{'snoozed':>8}{'escal.':>7}{'repeat':>7}"
            f"{'acked':>6}{'cleared unacked':>16}{'median ack':>12}"
        )
        for c, v in rules.items():
            out.append(
                f"  {c:<22}{v.get('raised', 0):>7}{v.get('held', 0):>6}{v.get('snoozed', 0):>8}"
                f"{v.get('escalated', 0):>7}{v.get('repeated', 0):>7}{v.get('acknowledged', 0):>6}"
                f"{v.get('cleared_unacknowledged', 0):>16}{format_seconds(v.get('median_ack_s')):>12}"
            )
    else:
        out.append("  (none)")
    out += ["", "alarms per patient"]
    for p, v in r["patients"].items():
        conds = ", ".join(f"{c} {n}" for c, n in v["by_condition"].items())
        out.append(f"  {p:<12}{v['raised']:>5}  {conds}")
    if not r["patients"]:
        out.append("  (none)")
    out += ["", "ack delay per tier (from reaching the tier to the acknowledgement)"]
    for t, v in r["ack_delay"].items():
        out.append(
            f"  {t:<10} n={v['n']:<4} median {format_seconds(v['median_s']):>7}  p90 {format_seconds(v['p90_s']):>7}"
            f"  max {format_seconds(v['max_s']):>7}"
        )
    if not r["ack_delay"]:
        out.append("  (no acknowledgements)")
    out += ["", "escalations"]
    for e in r["escalations"]:
        out.append(f"  {e['from']} -> {e['to']}: {e['n']}")
    if not r["escalations"]:
        out.append("  (none)")
    holds = r["holds"]
    out += [
        "",
        f"held: inhibited {holds.get('inhibited', 0)}, silenced {holds.get('silence', 0)}, "
        f"snoozed {holds.get('snooze', 0)}; silences created {r['silences_created']}",
    ]
    if r["channels"]:
        out += ["", "channels"]
        for c, v in r["channels"].items():
            out.append(f"  {c:<16} deliveries {v['deliveries']}, delivered {v['delivered']}, attempts {v['attempts']}")
    return "\n".join(out)
