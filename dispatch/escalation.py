"""The escalation ladder: how long a tier has to acknowledge before the next is told.

Pure: given an alert, when is it due to escalate and to which tier, who is
told at each tier, and how often the top of the ladder is reminded. The
dispatcher keeps the due times in SQLite, so a restart keeps them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from stream.models import Alert, AlertState, Condition, Duration, Severity, Tier, parse_duration


class AckTimeouts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    village: Duration = parse_duration("4h")
    township: Duration = parse_duration("30m")
    county: Duration = parse_duration("10m")
    emergency: Duration | None = Field(None, description="top of the ladder: repeat instead of escalating")

    def for_tier(self, tier: Tier) -> timedelta | None:
        return getattr(self, tier.value)


class ConditionEscalation(BaseModel):
    """A per-condition rung: after `timeout` at tier `at`, go straight `to`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: Tier
    timeout: Duration
    to: Tier


class EscalationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ack_timeout: AckTimeouts = AckTimeouts()
    high_severity_village: Duration = Field(
        parse_duration("30m"), description="village timeout for high/critical alerts"
    )
    repeat_interval: Duration = Field(
        parse_duration("10m"), description="re-send a firing alert nobody acknowledged at the top tier"
    )
    also_notify: dict[Tier, list[Tier]] = Field(
        default_factory=lambda: {Tier.EMERGENCY: [Tier.COUNTY, Tier.VILLAGE]},
        description="who else is told when an alert is at a tier (default: emergency also to county and the "
        "village doctor; docs/spec/clinical-rules.md §Escalation)",
    )
    max_snooze: Duration = Field(parse_duration("2h"), description="longest snooze anyone may set on a firing alert")
    conditions: dict[Condition, ConditionEscalation] = Field(
        default_factory=lambda: {
            Condition.HYPOGLYCEMIA_SEVERE: ConditionEscalation(
                at=Tier.TOWNSHIP, timeout=parse_duration("10m"), to=Tier.EMERGENCY
            )
        }
    )

    def next_step(self, alert: Alert) -> tuple[timedelta, Tier] | None:
        """(time allowed at the current tier, tier to escalate to), or None at the top."""
        if alert.state is not AlertState.FIRING:
            return None
        timeout = self.ack_timeout.for_tier(alert.tier)
        if timeout is not None and alert.tier is Tier.VILLAGE and alert.severity.rank >= Severity.HIGH.rank:
            timeout = min(timeout, self.high_severity_village)
        rung = self.conditions.get(alert.condition)
        if rung is not None and rung.at is alert.tier:
            # A rung exists to make escalation faster; it never makes the clinic's
            # configured tier timeout longer.
            return (rung.timeout if timeout is None else min(rung.timeout, timeout)), rung.to
        nxt = alert.tier.next()
        if nxt is None or timeout is None:
            return None
        return timeout, nxt

    def audience(self, tier: Tier) -> list[Tier]:
        """The tier topics an alert at `tier` is published on, the tier itself first."""
        return [tier, *[t for t in self.also_notify.get(tier, []) if t is not tier]]

    def due_at(self, alert: Alert, since: datetime) -> tuple[datetime, Tier] | None:
        step = self.next_step(alert)
        return None if step is None else (since + step[0], step[1])
