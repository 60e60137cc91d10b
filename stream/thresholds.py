"""Clinical thresholds and plausibility ranges, with the defaults of docs/spec/clinical-rules.md.

A clinic sets them under `thresholds:`; a patient may override any field under
`patients[].thresholds:` (only the fields written there change).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stream.models import Duration, parse_duration


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BpThresholds(_Section):
    """mmHg. Crisis needs two unflagged readings >= crisis, 1–5 min apart by device time."""

    home_mean_systolic: float = Field(135, gt=0)
    home_mean_diastolic: float = Field(85, gt=0)
    home_mean_window: Duration = parse_duration("7d")
    home_mean_min_readings: int = Field(6, ge=1, description="readings needed before the 7-day mean counts")
    high_systolic: float = Field(160, gt=0)
    high_diastolic: float = Field(100, gt=0)
    crisis_systolic: float = Field(180, gt=0)
    crisis_diastolic: float = Field(110, gt=0)
    crisis_confirm_min_gap: Duration = parse_duration("1m")
    crisis_confirm_max_gap: Duration = parse_duration("5m")

    @model_validator(mode="after")
    def _ordered(self) -> BpThresholds:
        if not self.high_systolic < self.crisis_systolic:
            raise ValueError("high_systolic must be below crisis_systolic")
        if self.crisis_confirm_min_gap >= self.crisis_confirm_max_gap:
            raise ValueError("crisis_confirm_min_gap must be shorter than crisis_confirm_max_gap")
        return self


class GlucoseThresholds(_Section):
    """mmol/L (ADA/CDS levels; crisis per the public-health follow-up spec)."""

    hypo: float = Field(3.9, gt=0)
    hypo_severe: float = Field(3.0, gt=0)
    hyper: float = Field(13.9, gt=0)
    hyper_crisis: float = Field(16.7, gt=0)
    hyper_hhs: float = Field(33.3, gt=0)
    recheck_within: Duration = Field(
        parse_duration("1h"),
        description="a hypo reading followed by another "
        "hypo within this window is severe (the 15-minute recheck failed)",
    )

    @model_validator(mode="after")
    def _ordered(self) -> GlucoseThresholds:
        if not (self.hypo_severe < self.hypo < self.hyper < self.hyper_crisis <= self.hyper_hhs):
            raise ValueError("need hypo_severe < hypo < hyper < hyper_crisis <= hyper_hhs")
        return self


class Spo2Thresholds(_Section):
    low: float = Field(90, gt=0, le=100)
    severe: float = Field(85, gt=0, le=100)
    persist: Duration = parse_duration("60s")


class Plausibility(_Section):
    """Values outside these ranges are rejected as implausible (docs/spec/clinical-rules.md §Plausibility)."""

    systolic: tuple[float, float] = (50, 280)
    diastolic: tuple[float, float] = (20, 200)
    min_pulse_pressure: float = 10
    heart_rate: tuple[float, float] = (25, 250)
    glucose: tuple[float, float] = (0.6, 33.3)
    spo2: tuple[float, float] = (50, 100)
    max_future_skew: Duration = parse_duration("5m")


class Thresholds(_Section):
    bp: BpThresholds = BpThresholds()
    glucose: GlucoseThresholds = GlucoseThresholds()
    spo2: Spo2Thresholds = Spo2Thresholds()
    plausibility: Plausibility = Plausibility()
    backfill_age: Duration = Field(parse_duration("1h"), description="older readings go to follow-up, not acute tiers")
    missed_readings_overdue: Duration = Field(
        parse_duration("24h"), description="a scheduled reading this late raises missed_readings"
    )

    def with_override(self, override: dict[str, Any] | Thresholds | None) -> Thresholds:
        """Apply only the fields an override sets (a patient's `thresholds:` as written)."""
        if not override:
            return self
        top = override.model_dump(exclude_unset=True) if isinstance(override, Thresholds) else override
        return Thresholds.model_validate(_deep_merge(self.model_dump(), top))


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
