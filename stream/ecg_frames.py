"""ECG frame bookkeeping per device: sample-rate changes, sequence gaps, lead-off time.

This is the seam to the arrhythmia analyser (`stream.ecg.analyser`): frames
are checked here, then pushed on a continuous time base (gaps become time
jumps, never silence), and its alarms become findings. Pure apart from the
analyser it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from stream.models import Condition, EcgFrame, EcgSummary, Finding, Severity, Tier

LEAD_OFF_ALARM_AFTER = timedelta(minutes=5)  # docs/spec/clinical-rules.md §Routing: lead_off for > 5 min

# Where the analyser grades a condition more severe than its default route (clinical-rules.md §Routing):
# tachycardia >= 150/min for a minute goes to the county, not the village doctor.
_RAISED_ROUTE: dict[tuple[str, str | None], tuple[Tier, Severity]] = {
    ("tachycardia", "high"): (Tier.COUNTY, Severity.HIGH),
}


class RhythmAnalyser(Protocol):
    def push(self, samples_uv: np.ndarray, *, t0_s: float | None = None, lead_off: bool = False) -> list[Any]: ...
    def minute_summary(self) -> dict | None: ...


@dataclass
class EcgDeviceState:
    fs: float | None = None
    last_seq: int | None = None
    origin: datetime | None = None  # device time of t = 0 on the analyser's time base
    lead_off_since: datetime | None = None
    lead_off_raised: bool = False
    gaps: int = 0
    analyser: RhythmAnalyser | None = None
    frames: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _conditions() -> set[str]:
    return {c.value for c in Condition}


class EcgFrameTracker:
    def __init__(self, analyser_factory: type[RhythmAnalyser] | None = None) -> None:
        self._factory = analyser_factory
        self._devices: dict[str, EcgDeviceState] = {}
        self._known = _conditions()

    def push(
        self, patient_id: str, device_id: str, frame: EcgFrame
    ) -> tuple[list[Finding], EcgSummary | None, list[str]]:
        """Returns (findings, a per-minute summary when one is due, notes about the frame)."""
        st = self._devices.setdefault(device_id, EcgDeviceState())
        notes: list[str] = []
        if st.fs is not None and st.fs != frame.fs:
            notes.append(f"sample rate changed {st.fs:g} -> {frame.fs:g} Hz; analysis restarts")
            st.analyser = None
            st.origin = None
        if st.last_seq is not None and frame.seq is not None and frame.seq != st.last_seq + 1:
            st.gaps += 1
            notes.append(f"sequence gap: {st.last_seq} -> {frame.seq}")
        st.fs, st.last_seq, st.frames = frame.fs, frame.seq, st.frames + 1
        findings: list[Finding] = []

        # Lead-off is a technical condition after 5 min; it never becomes a clinical one.
        if frame.lead_off:
            st.lead_off_since = st.lead_off_since or frame.ts
            if not st.lead_off_raised and frame.ts - st.lead_off_since >= LEAD_OFF_ALARM_AFTER:
                st.lead_off_raised = True
                findings.append(
                    Finding(
                        patient_id=patient_id,
                        condition=Condition.LEAD_OFF,
                        at=frame.ts,
                        evidence={"device_id": device_id, "since": st.lead_off_since.isoformat()},
                    )
                )
        else:
            if st.lead_off_raised:
                findings.append(
                    Finding(
                        patient_id=patient_id,
                        condition=Condition.LEAD_OFF,
                        active=False,
                        at=frame.ts,
                        evidence={"device_id": device_id},
                    )
                )
            st.lead_off_since, st.lead_off_raised = None, False

        summary = None
        if self._factory is not None:
            if st.analyser is None:
                st.analyser = self._factory(frame.fs)  # type: ignore[call-arg]
                st.origin = frame.ts
            assert st.origin is not None
            t0 = (frame.ts - st.origin).total_seconds()
            alarms = st.analyser.push(np.asarray(frame.samples_uv, dtype=np.float64), t0_s=t0, lead_off=frame.lead_off)
            for alarm in alarms:
                if alarm.condition not in self._known:
                    continue
                at = st.origin + timedelta(seconds=float(alarm.start_s))
                detail = alarm.detail or {}
                tier, severity = _RAISED_ROUTE.get((alarm.condition, detail.get("severity")), (None, None))
                findings.append(
                    Finding(
                        patient_id=patient_id,
                        condition=Condition(alarm.condition),
                        active=alarm.active,
                        at=at,
                        tier=tier,
                        severity=severity,
                        evidence={"device_id": device_id, **detail},
                    )
                )
            s = st.analyser.minute_summary()
            if s is not None:
                summary = EcgSummary(ts=frame.ts, **{k: v for k, v in s.items() if k in EcgSummary.model_fields})
        return findings, summary, notes
