"""Patient physiology for the simulators: blood pressure over the day, glucose around meals.

Deterministic given a seed, evaluated at any device time, so a scenario can
sample a patient whenever its device would measure. Values are plausible, not
clinical truth: the models exist to exercise the gateway's paths (normal days,
crises, hypoglycaemia after insulin), never to score a detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class BpModel:
    """Home blood pressure, mmHg.

    A day-night rhythm (night dip ~12 %, morning surge), measurement noise,
    an antihypertensive dose that lowers pressure for ~12 h, and crisis
    episodes (start s, duration s) where pressure climbs to grade 3.
    """

    systolic: float = 138.0
    diastolic: float = 86.0
    noise_sd: float = 5.0
    dose_hours: tuple[float, ...] = (8.0,)  # clock hours the patient takes the tablet
    dose_effect: float = 12.0  # mmHg systolic at peak (diastolic about 60 % of it)
    missed_doses: float = 0.0  # probability a dose is skipped
    crises: list[tuple[float, float]] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def at(self, t_s: float, clock_hour: float) -> tuple[float, float, float]:
        """(systolic, diastolic, pulse) at scenario second `t_s`, local clock hour `clock_hour`."""
        # Night dip and morning surge: lowest ~03:00, peak ~09:00.
        circadian = -0.06 * math.cos(2 * math.pi * (clock_hour - 3.0) / 24.0) - 0.06
        surge = 0.05 * math.exp(-(((clock_hour - 8.5) / 1.5) ** 2))
        sys_ = self.systolic * (1 + circadian + surge)
        dia = self.diastolic * (1 + 0.8 * (circadian + surge))
        for h in self.dose_hours:
            since = (clock_hour - h) % 24.0
            if self._rng.random() >= self.missed_doses:
                effect = self.dose_effect * math.exp(-since / 8.0) * (1 - math.exp(-since / 1.0))
                sys_ -= effect
                dia -= 0.6 * effect
        for start, dur in self.crises:
            if start <= t_s <= start + dur:
                ramp = min(1.0, (t_s - start) / 300.0 + 0.6)
                sys_ += ramp * (195 - sys_)
                dia += ramp * (120 - dia)
        sys_ += self._rng.normal(0, self.noise_sd)
        dia += self._rng.normal(0, self.noise_sd * 0.6)
        pulse = 72 + self._rng.normal(0, 4) + (10 if sys_ > 175 else 0)
        return round(sys_), round(min(dia, sys_ - 15)), round(pulse)


@dataclass
class GlucoseModel:
    """Capillary glucose, mmol/L: fasting baseline, meal excursions, insulin, hypoglycaemic events.

    Meals raise glucose by `meal_rise` with a gamma-shaped curve peaking about
    an hour later; rapid-acting insulin with a meal lowers it with a slower
    curve; `hypos` are (start s, duration s, nadir mmol/L) episodes.
    """

    fasting: float = 6.5
    meal_hours: tuple[float, ...] = (7.0, 12.0, 18.5)
    meal_rise: float = 4.0
    insulin_units: float = 0.0  # per meal; each unit lowers the peak by ~0.5 mmol/L
    hypos: list[tuple[float, float, float]] = field(default_factory=list)
    noise_sd: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def at(self, t_s: float, clock_hour: float) -> float:
        g = self.fasting
        for h in self.meal_hours:
            since = (clock_hour - h) % 24.0
            if since < 5.0:
                g += self.meal_rise * (since / 1.0) * math.exp(1 - since / 1.0)
                g -= 0.5 * self.insulin_units * (since / 1.5) * math.exp(1 - since / 1.5)
        for start, dur, nadir in self.hypos:
            if start <= t_s <= start + dur:
                g = nadir + (g - nadir) * 0.1
        g += self._rng.normal(0, self.noise_sd)
        return round(max(1.2, g), 1)

    def meal_label(self, clock_hour: float) -> str:
        for h in self.meal_hours:
            since = (clock_hour - h) % 24.0
            if since < 0.25:
                return "preprandial"
            if since < 3.0:
                return "postprandial"
        return "fasting" if 4.0 <= clock_hour < 7.0 else "casual"
