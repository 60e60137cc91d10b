"""Inhibition and silences as data (Alertmanager's `inhibit_rules` and silences).

Inhibition: while a patient has an active (firing or acknowledged) alert that
matches a rule's `source`, that patient's alerts matching the rule's `target`
are held: recorded, visible in the HTTP API, but not sent and not escalated.
When the source resolves, a held alert that is still firing is sent (if it
never was) and its ladder starts from then.

Silences: matchers plus a time span, created by someone for a reason (the
audit trail keeps who, when and why, and who ended it early). A silenced
alert is held the same way; when the silence ends, a still-firing alert is
sent again as a reminder. A silence never holds a critical alert unless it
says `include_critical: true` (asystole must not vanish because a technician
silenced a patient's ECG patch).

Pure models and matching; the dispatcher applies them, the alert store keeps them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dispatch.routing import Match, MatchContext
from stream.models import CHINA_TZ, Condition, Duration, Severity

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"

RHYTHM_CONDITIONS = [
    Condition.AF,
    Condition.AF_RVR,
    Condition.VT,
    Condition.VT_SUSTAINED,
    Condition.PAUSE,
    Condition.ASYSTOLE,
    Condition.BRADYCARDIA,
    Condition.TACHYCARDIA,
    Condition.PVC_FREQUENT,
]


class InhibitRule(BaseModel):
    """While an alert matching `source` is active, alerts matching `target` with equal `equal` values are held."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Match
    target: Match
    equal: list[str] = Field(
        default_factory=lambda: ["patient_id"], description="patient_id and/or patient label names that must be equal"
    )

    @model_validator(mode="after")
    def _not_everything(self) -> InhibitRule:
        if self.source.is_empty() or self.target.is_empty():
            raise ValueError("an inhibit rule needs matchers on both source and target")
        return self


def _rule(source: list[Condition], target: list[Condition]) -> InhibitRule:
    return InhibitRule(source=Match(condition=source), target=Match(condition=target))


# docs/spec/clinical-rules.md §Routing: the worse form of a problem stands for the milder one; a lead
# off makes every rhythm call meaningless (the lead_off alert itself still goes out).
DEFAULT_INHIBIT_RULES: list[InhibitRule] = [
    _rule([Condition.BP_CRISIS], [Condition.BP_HIGH]),
    _rule([Condition.HYPOGLYCEMIA_SEVERE], [Condition.HYPOGLYCEMIA]),
    _rule([Condition.HYPERGLYCEMIA_CRISIS], [Condition.HYPERGLYCEMIA]),
    _rule([Condition.AF_RVR], [Condition.AF]),
    _rule([Condition.VT_SUSTAINED], [Condition.VT]),
    _rule([Condition.LEAD_OFF], RHYTHM_CONDITIONS),
]


def equal_values(names: list[str], patient_id: str, labels: dict) -> tuple:
    return tuple(patient_id if n == "patient_id" else labels.get(n) for n in names)


class SilenceSpec(BaseModel):
    """A silence as written in the config, an MQTT message or an HTTP request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(None, pattern=_ID, description="optional; makes a repeated request idempotent")
    match: Match
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    duration: Duration | None = Field(None, description="instead of ends_at: from starts_at (or now)")
    by: str = Field(min_length=1, max_length=200)
    why: str = Field(min_length=1, max_length=1000)
    include_critical: bool = False

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _zone(cls, v: datetime | None) -> datetime | None:
        return v.replace(tzinfo=CHINA_TZ) if v is not None and v.tzinfo is None else v

    @model_validator(mode="after")
    def _sane(self) -> SilenceSpec:
        if self.match.is_empty():
            raise ValueError("a silence must say what it silences (match: condition, patient, labels, ...)")
        if self.ends_at is not None and self.duration is not None:
            raise ValueError("give ends_at or duration, not both")
        if self.ends_at is not None and self.starts_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


@dataclass
class Silence:
    """A stored silence, with its audit fields."""

    id: str
    match: Match
    starts_at: datetime
    ends_at: datetime | None  # None: until expired (config silences, e.g. a nightly time_of_day window)
    created_by: str
    created_at: datetime
    why: str
    include_critical: bool
    source: str  # config | mqtt | http
    expired_by: str | None = None
    expired_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        if self.expired_at is not None and self.expired_at <= now:
            return False
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)

    def holds(self, ctx: MatchContext) -> bool:
        if ctx.severity is Severity.CRITICAL and not self.include_critical:
            return False
        return self.active(ctx.at) and self.match.matches(ctx)

    def to_public(self) -> dict:
        from stream.models import iso

        return {
            "id": self.id,
            "match": self.match.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at) if self.ends_at else None,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "why": self.why,
            "include_critical": self.include_critical,
            "source": self.source,
            "expired_by": self.expired_by,
            "expired_at": iso(self.expired_at) if self.expired_at else None,
        }


def config_silence_id(spec: SilenceSpec) -> str:
    """Config silences get a stable id from their content, so a restart does not duplicate them."""
    if spec.id:
        return spec.id
    blob = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return "cfg-" + hashlib.sha1(blob.encode()).hexdigest()[:12]
