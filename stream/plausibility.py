"""Plausibility: values no device should report are rejected with a reason (docs/spec/clinical-rules.md §Plausibility).

Pure. Runs after decoding and before anything is stored or judged.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from stream.models import (
    Accepted,
    BloodPressureReading,
    EcgFrame,
    GlucoseReading,
    HeartRateReading,
    Rejected,
    Spo2Reading,
)
from stream.thresholds import Plausibility


def _outside(value: float, rng: tuple[float, float]) -> bool:
    return not (rng[0] <= value <= rng[1])


def _non_finite(reading: object) -> str | None:
    """The first numeric field holding NaN or ±Infinity (any reading kind), or None.

    JSON from a device may carry NaN/Infinity literals; a stored NaN breaks every consumer after
    it (a patient's FHIR export failed with a 500). ECG samples are checked with the frame.
    """
    for name, value in vars(reading).items():
        if name == "samples_uv":
            continue
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            return name
    return None


def check(acc: Accepted, limits: Plausibility, now: datetime) -> Rejected | None:
    """None if plausible, else the reason."""
    r = acc.reading

    def bad(reason: str, detail: str) -> Rejected:
        return Rejected(reason=reason, detail=f"{acc.device_id}: {detail}", device_id=acc.device_id)

    if (field := _non_finite(r)) is not None:
        return bad("implausible_value", f"{field} is not a finite number (NaN or Infinity)")
    if r.ts - now > limits.max_future_skew:
        return bad(
            "future_timestamp",
            f"device time {r.ts.isoformat()} is {r.ts - now} ahead of the gateway; set the device clock",
        )
    if isinstance(r, BloodPressureReading):
        if _outside(r.systolic, limits.systolic):
            return bad("implausible_value", f"systolic {r.systolic} mmHg outside {limits.systolic}")
        if _outside(r.diastolic, limits.diastolic):
            return bad("implausible_value", f"diastolic {r.diastolic} mmHg outside {limits.diastolic}")
        if r.systolic - r.diastolic < limits.min_pulse_pressure:
            return bad(
                "implausible_value",
                f"pulse pressure {r.systolic - r.diastolic:g} mmHg < {limits.min_pulse_pressure:g} (systolic must exceed diastolic)",
            )
        if r.pulse is not None and _outside(r.pulse, limits.heart_rate):
            return bad("implausible_value", f"pulse {r.pulse} bpm outside {limits.heart_rate}")
    elif isinstance(r, GlucoseReading):
        if r.mmol_l is None and r.range is None:
            return bad("invalid_reading", "glucose without a value or a HI/LO flag")
        if r.mmol_l is not None and r.range is None and _outside(r.mmol_l, limits.glucose):
            return bad(
                "implausible_value",
                f"glucose {r.mmol_l} mmol/L outside {limits.glucose} (a mg/dL value sent as mmol/L?)",
            )
    elif isinstance(r, Spo2Reading):
        if _outside(r.spo2, limits.spo2):
            return bad("implausible_value", f"SpO2 {r.spo2} % outside {limits.spo2}")
        if r.pulse is not None and _outside(r.pulse, limits.heart_rate):
            return bad("implausible_value", f"pulse {r.pulse} bpm outside {limits.heart_rate}")
    elif isinstance(r, HeartRateReading):
        # A strap with no skin contact reports junk rates; keep the reading (it is a lead-off signal).
        if r.contact is not False and _outside(r.bpm, limits.heart_rate):
            return bad("implausible_value", f"heart rate {r.bpm} bpm outside {limits.heart_rate}")
    elif isinstance(r, EcgFrame):
        n = len(r.samples_uv)
        if not (0.2 * r.fs <= n <= 10 * r.fs):
            return bad("invalid_ecg_frame", f"{n} samples at {r.fs:g} Hz is not a 0.2-10 s frame")
        # NaN or > ±50 mV (a NaN compares False, so it fails too): one numpy pass costs half a Python loop
        # over 250 samples (8 against 16 µs a frame, bench/load.py --profile)
        if not (np.abs(np.asarray(r.samples_uv, dtype=np.float64)) <= 50_000).all():
            return bad("invalid_ecg_frame", "samples must be finite and within ±50,000 µV")
    return None
