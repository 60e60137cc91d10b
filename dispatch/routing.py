"""Where a finding goes: the default tier and severity per condition (DOMAIN.md §2.1).

Routing is data: `routes:` in the config overrides any row of the default
table; `vitalgate` never hides a tier decision in an `if` chain. Pure, no I/O.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from stream.models import Condition, Finding, Severity, Tier


class Route(BaseModel):
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


class RoutingTable:
    def __init__(self, overrides: dict[Condition, Route] | None = None) -> None:
        self._routes = {**DEFAULT_ROUTES, **(overrides or {})}

    def route(self, finding: Finding) -> Route:
        """The tier and severity a finding opens at.

        A finding may ask for a higher tier or severity than its default (for
        example a county-level hyperglycaemia crisis on a HI reading); it never
        lowers the configured route, except follow-up findings from back-filled
        readings, which always go to the village doctor at low severity.
        """
        base = self._routes[finding.condition]
        if finding.follow_up:
            return Route(tier=Tier.VILLAGE, severity=Severity.LOW)
        tier = base.tier
        if finding.tier is not None and list(Tier).index(finding.tier) > list(Tier).index(tier):
            tier = finding.tier
        severity = base.severity
        if finding.severity is not None and finding.severity.rank > severity.rank:
            severity = finding.severity
        return Route(tier=tier, severity=severity)
