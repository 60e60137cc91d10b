"""Where a finding goes: a declarative routing tree (Alertmanager style) over the default table
(docs/spec/clinical-rules.md §Routing).

Routing is data. The config's `routing:` key is the root of a tree; each node
has matchers (condition, severity, tier, patient, patient labels, time of
day), what it sets (`tier`, `severity`, extra `channels`), timing
(`group_wait`, `group_interval`, `repeat_interval`), `continue` and child
`routes`. Children inherit what they do not set. The walk is Alertmanager's:
an alert descends into the first matching child (and, with `continue: true`
on that child, into the following matching siblings too); a node whose
children do not match is where the alert ends up.

Each setting (tier, severity, timing) comes from the first match that sets
it; every match adds its channels, so a `continue: true` route can add a
channel for some patients and let the routes after it decide the tier. Whatever no node sets falls back to the
per-condition default table (clinical-rules.md §Routing; the flat `routes:` key still
overrides rows of it). By default the table is also appended to the tree as
one node per (tier, severity), so `vitalgate routes test` shows the whole
default tree. Pure, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stream.models import CHINA_TZ, Condition, Duration, Finding, Severity, Tier, now_local, parse_duration


class Route(BaseModel):
    """A row of the default table: the tier and severity a condition opens at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: Tier
    severity: Severity


def _r(tier: str, severity: str) -> Route:
    return Route(tier=Tier(tier), severity=Severity(severity))


DEFAULT_ROUTES: dict[Condition, Route] = {
    Condition.BP_HIGH: _r("village", "medium"),
    Condition.BP_CRISIS: _r("township", "high"),
    Condition.HYPOGLYCEMIA: _r("village", "medium"),
    Condition.HYPOGLYCEMIA_SEVERE: _r("township", "critical"),
    Condition.HYPERGLYCEMIA: _r("village", "medium"),
    Condition.HYPERGLYCEMIA_CRISIS: _r("township", "high"),
    Condition.SPO2_LOW: _r("township", "high"),
    Condition.BRADYCARDIA: _r("county", "high"),
    Condition.TACHYCARDIA: _r("village", "medium"),
    Condition.AF: _r("township", "medium"),
    Condition.AF_RVR: _r("county", "high"),
    Condition.VT: _r("county", "high"),
    Condition.VT_SUSTAINED: _r("emergency", "critical"),
    Condition.PAUSE: _r("county", "high"),
    Condition.ASYSTOLE: _r("emergency", "critical"),
    Condition.PVC_FREQUENT: _r("village", "low"),
    Condition.MISSED_READINGS: _r("village", "low"),
    Condition.DEVICE_OFFLINE: _r("village", "low"),
    Condition.LEAD_OFF: _r("village", "low"),
    Condition.BATTERY_LOW: _r("village", "low"),
}

# Critical conditions latch: they stay until someone acknowledges them, even if
# the value recovers (IEC 60601-1-8 latching alarm signals).
LATCHING = frozenset({Severity.CRITICAL, Severity.HIGH})

# Root timing defaults (Alertmanager's repeat_interval; shorter waits: these are patients).
DEFAULT_GROUP_WAIT = parse_duration("10s")
DEFAULT_GROUP_INTERVAL = parse_duration("1m")
DEFAULT_REPEAT_INTERVAL = parse_duration("4h")

_WINDOW = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]|24):([0-5]\d)$")


def tier_rank(t: Tier) -> int:
    return list(Tier).index(t)


# ---------------------------------------------------------------- matchers


@dataclass(frozen=True)
class MatchContext:
    """What a matcher looks at: one alert (or finding) of one patient at one moment."""

    condition: Condition
    severity: Severity
    tier: Tier
    patient_id: str
    labels: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=now_local)


def _window_contains(window: str, at: datetime) -> bool:
    m = _WINDOW.match(window.strip())
    assert m is not None  # validated
    start = int(m.group(1)) * 60 + int(m.group(2))
    end = int(m.group(3)) * 60 + int(m.group(4))
    local = at.astimezone(CHINA_TZ)
    now = local.hour * 60 + local.minute
    if start <= end:
        return start <= now < end
    return now >= start or now < end  # wraps midnight, e.g. 22:00-07:00


def _label_equal(want: Any, have: Any) -> bool:
    if want is False and have is None:
        return True  # `chronic_af: false` matches patients without the label
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have or str(want).lower() == str(have).lower()
    return str(want) == str(have)


class Match(BaseModel):
    """Matchers; every one given must hold (an empty match matches everything).

    Each list field matches if the alert's value is one of the listed values; a
    single value may be written without brackets.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    condition: list[Condition] | None = None
    severity: list[Severity] | None = None
    tier: list[Tier] | None = None
    patient: list[str] | None = Field(None, description="patient ids")
    labels: dict[str, str | bool | int | list[str | bool | int]] = Field(
        default_factory=dict, description="patient labels from patients[].labels"
    )
    time_of_day: list[str] | None = Field(None, description="clinic-time windows like 22:00-07:00")

    @field_validator("condition", "severity", "tier", "patient", "time_of_day", mode="before")
    @classmethod
    def _listify(cls, v: object) -> object:
        return [v] if isinstance(v, (str, int)) and not isinstance(v, bool) else v

    @field_validator("time_of_day")
    @classmethod
    def _windows(cls, v: list[str] | None) -> list[str] | None:
        for w in v or []:
            if not _WINDOW.match(w.strip()):
                raise ValueError(f"{w!r} is not a time window; write it like 22:00-07:00 (clinic time)")
        return v

    def is_empty(self) -> bool:
        return not (self.condition or self.severity or self.tier or self.patient or self.labels or self.time_of_day)

    def matches(self, ctx: MatchContext) -> bool:
        if self.condition is not None and ctx.condition not in self.condition:
            return False
        if self.severity is not None and ctx.severity not in self.severity:
            return False
        if self.tier is not None and ctx.tier not in self.tier:
            return False
        if self.patient is not None and ctx.patient_id not in self.patient:
            return False
        for key, want in self.labels.items():
            have = ctx.labels.get(key)
            wants = want if isinstance(want, list) else [want]
            if not any(_label_equal(w, have) for w in wants):
                return False
        if self.time_of_day is not None and not any(_window_contains(w, ctx.at) for w in self.time_of_day):
            return False
        return True

    def describe(self) -> str:
        parts = []
        for name in ("condition", "severity", "tier", "patient"):
            vals = getattr(self, name)
            if vals:
                parts.append(f"{name}={','.join(v.value if hasattr(v, 'value') else str(v) for v in vals)}")
        for k, v in self.labels.items():
            parts.append(f"labels.{k}={v}")
        if self.time_of_day:
            parts.append(f"time_of_day={','.join(self.time_of_day)}")
        return " ".join(parts) or "(everything)"


# ---------------------------------------------------------------- the tree


class RouteNode(BaseModel):
    """One node of the routing tree; unset fields are inherited from the parent."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str | None = Field(None, description="shown by `vitalgate routes test`")
    match: Match = Match()
    tier: Tier | None = Field(None, description="the tier (MQTT topic) the alert opens at: this tree's receiver")
    severity: Severity | None = None
    channels: list[str] = Field(default_factory=list, description="extra channels (names from channels:)")
    continue_: bool = Field(False, alias="continue")
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    routes: list[RouteNode] = Field(default_factory=list)


class RoutingTree(RouteNode):
    """The root (`routing:` in the config). It matches every alert."""

    group_wait: Duration = DEFAULT_GROUP_WAIT
    group_interval: Duration = DEFAULT_GROUP_INTERVAL
    repeat_interval: Duration = DEFAULT_REPEAT_INTERVAL
    defaults: bool = Field(
        True, description="append the default routes (docs/spec/clinical-rules.md §Routing) after yours"
    )

    @model_validator(mode="after")
    def _root(self) -> RoutingTree:
        if not self.match.is_empty():
            raise ValueError("the root of the routing tree matches every alert; put matchers in routes: below it")
        if self.continue_:
            raise ValueError("`continue` has no meaning on the root")
        return self

    def channel_names(self) -> list[tuple[str, str]]:
        """(dotted path, channel name) for every channel a node names, for validation."""
        out: list[tuple[str, str]] = []

        def walk(node: RouteNode, path: str) -> None:
            for i, c in enumerate(node.channels):
                out.append((f"{path}.channels.{i}" if path else f"channels.{i}", c))
            for j, child in enumerate(node.routes):
                walk(child, f"{path}.routes.{j}" if path else f"routes.{j}")

        walk(self, "")
        return out


def default_tree_routes(table: dict[Condition, Route]) -> list[RouteNode]:
    """The default table (clinical-rules.md §Routing) as tree nodes, one per (tier, severity), most urgent first."""
    groups: dict[tuple[Tier, Severity], list[Condition]] = {}
    for cond, route in table.items():
        groups.setdefault((route.tier, route.severity), []).append(cond)
    nodes = []
    for (tier, sev), conds in sorted(groups.items(), key=lambda kv: (-tier_rank(kv[0][0]), -kv[0][1].rank)):
        nodes.append(
            RouteNode(
                name=f"default {tier.value}/{sev.value}",
                match=Match(condition=conds),
                tier=tier,
                severity=sev,
                # The 120 bridge is never held back to collect a group.
                group_wait=timedelta(0) if tier is Tier.EMERGENCY else None,
            )
        )
    return nodes


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class RouteDecision:
    tier: Tier
    severity: Severity
    channels: tuple[str, ...]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    path: tuple[str, ...]  # the nodes that matched, for the audit trail and `routes test`
    follow_up: bool = False

    def stored(self) -> dict[str, Any]:
        """What the dispatcher keeps with the alert (JSON), so later notifications need no re-routing."""
        return {
            "channels": list(self.channels),
            "group_wait": self.group_wait.total_seconds(),
            "group_interval": self.group_interval.total_seconds(),
            "repeat_interval": self.repeat_interval.total_seconds(),
            "path": list(self.path),
            "follow_up": self.follow_up,
        }


_SETTINGS = ("tier", "severity", "group_wait", "group_interval", "repeat_interval")


@dataclass(frozen=True)
class _Eff:
    tier: Tier | None
    severity: Severity | None
    channels: tuple[str, ...]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    explicit: frozenset[str] = frozenset()  # settings a route below the root set on this path

    def child(self, n: RouteNode) -> _Eff:
        chans = self.channels + tuple(c for c in n.channels if c not in self.channels)
        got = {k for k in _SETTINGS if getattr(n, k) is not None}
        return _Eff(
            n.tier or self.tier,
            n.severity or self.severity,
            chans,
            self.group_wait if n.group_wait is None else n.group_wait,
            self.group_interval if n.group_interval is None else n.group_interval,
            self.repeat_interval if n.repeat_interval is None else n.repeat_interval,
            self.explicit | got,
        )


def _label(node: RouteNode, path: str) -> str:
    return f"{path} ({node.name})" if node.name else f"{path} [{node.match.describe()}]"


class RoutingTable:
    """The effective routing: default table (+ flat `routes:` overrides) under a routing tree."""

    def __init__(
        self,
        overrides: dict[Condition, Route] | None = None,
        tree: RoutingTree | None = None,
        labels: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self._routes = {**DEFAULT_ROUTES, **(overrides or {})}
        self.tree = tree or RoutingTree()
        self._user_routes = list(self.tree.routes)
        self._default_routes = default_tree_routes(self._routes) if self.tree.defaults else []
        self.labels = labels or {}

    def labels_for(self, patient_id: str) -> dict[str, Any]:
        return self.labels.get(patient_id, {})

    def default_route(self, condition: Condition) -> Route:
        return self._routes[condition]

    def all_routes(self) -> list[tuple[str, RouteNode]]:
        """The root's children as walked: (path label, node)."""
        return [(f"routing.routes.{i}", n) for i, n in enumerate(self._user_routes)] + [
            (f"default.{i}", n) for i, n in enumerate(self._default_routes)
        ]

    def decide(self, finding: Finding, at: datetime | None = None) -> RouteDecision:
        """Tier, severity, channels and timing for a finding.

        A finding may ask for a higher tier or severity than its route (for
        example a county-level hyperglycaemia crisis on a HI reading); it is
        never lowered below what it asks. Follow-up findings from back-filled
        readings always go to the village doctor at low severity.
        """
        at = at or now_local()
        root = self.tree
        eff0 = _Eff(None, None, tuple(root.channels), root.group_wait, root.group_interval, root.repeat_interval)
        if finding.follow_up:
            return RouteDecision(
                Tier.VILLAGE,
                Severity.LOW,
                eff0.channels,
                eff0.group_wait,
                eff0.group_interval,
                eff0.repeat_interval,
                ("follow-up (back-filled reading)",),
                follow_up=True,
            )
        base = self._routes[finding.condition]
        tier0 = max(base.tier, finding.tier or base.tier, key=tier_rank)
        sev0 = max(base.severity, finding.severity or base.severity, key=lambda s: s.rank)
        ctx = MatchContext(finding.condition, sev0, tier0, finding.patient_id, self.labels_for(finding.patient_id), at)
        leaves: list[tuple[_Eff, tuple[str, ...]]] = []
        for path, node in self.all_routes():
            got = self._walk(node, ctx, eff0, (_label(node, path),), path)
            if got:
                leaves += got
                if not node.continue_:
                    break
        if not leaves:
            leaves = [(eff0, ("routing (root)",))]

        # Each setting comes from the first match that sets it (a `continue` route that only adds
        # channels takes nothing away from the routes after it); else from the root and the table.
        def first(name: str):  # type: ignore[no-untyped-def]
            eff = next((e for e, _ in leaves if name in e.explicit), leaves[0][0])
            return getattr(eff, name)

        tier = first("tier") or base.tier
        severity = first("severity") or base.severity
        if finding.tier is not None and tier_rank(finding.tier) > tier_rank(tier):
            tier = finding.tier
        if finding.severity is not None and finding.severity.rank > severity.rank:
            severity = finding.severity
        channels: list[str] = []
        for eff, _ in leaves:
            channels += [c for c in eff.channels if c not in channels]
        all_paths = tuple(" > ".join(p) for _, p in leaves)
        return RouteDecision(
            tier,
            severity,
            tuple(channels),
            first("group_wait"),
            first("group_interval"),
            first("repeat_interval"),
            all_paths,
        )

    def _walk(
        self, node: RouteNode, ctx: MatchContext, parent: _Eff, trail: tuple[str, ...], path: str
    ) -> list[tuple[_Eff, tuple[str, ...]]]:
        if not node.match.matches(ctx):
            return []
        eff = parent.child(node)
        out: list[tuple[_Eff, tuple[str, ...]]] = []
        for i, child in enumerate(node.routes):
            cpath = f"{path}.routes.{i}"
            got = self._walk(child, ctx, eff, (*trail, _label(child, cpath)), cpath)
            if got:
                out += got
                if not child.continue_:
                    break
        return out or [(eff, trail)]

    def route(self, finding: Finding, at: datetime | None = None) -> Route:
        """The tier and severity a finding opens at (see `decide`)."""
        d = self.decide(finding, at)
        return Route(tier=d.tier, severity=d.severity)
