"""The one model module shared by gateway, stream and dispatch.

Readings (what devices measure), alerts (what the dispatcher sends), tiers and
condition names. Pydantic v2 at the boundaries; the JSON shapes here are the
public surface (`docs/spec/public-surface.md`), so field names change only on purpose.

Units: blood pressure mmHg, glucose mmol/L, SpO2 %, heart rate bpm, ECG µV.
Times: `ts` is device time (what the device says), `received_at` is gateway
receive time. Both are timezone-aware; naive device times are read as the
clinic's zone (China, +08:00).
"""

from __future__ import annotations

import enum
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator, model_validator

CHINA_TZ = timezone(timedelta(hours=8), "CST")


def now_local() -> datetime:
    """Wall-clock now in the clinic's zone; every time we emit carries +08:00."""
    return datetime.now(CHINA_TZ)


def iso(dt: datetime) -> str:
    return dt.astimezone(CHINA_TZ).isoformat(timespec="milliseconds")


class Tier(str, enum.Enum):
    """Who is notified, from the village doctor up to the 120 emergency bridge."""

    VILLAGE = "village"
    TOWNSHIP = "township"
    COUNTY = "county"
    EMERGENCY = "emergency"

    def next(self) -> Tier | None:
        order = list(Tier)
        i = order.index(self)
        return order[i + 1] if i + 1 < len(order) else None


class Severity(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


class Condition(str, enum.Enum):
    """Condition names fixed by the contract."""

    BP_HIGH = "bp_high"
    BP_CRISIS = "bp_crisis"
    HYPOGLYCEMIA = "hypoglycemia"
    HYPOGLYCEMIA_SEVERE = "hypoglycemia_severe"
    HYPERGLYCEMIA = "hyperglycemia"
    HYPERGLYCEMIA_CRISIS = "hyperglycemia_crisis"
    SPO2_LOW = "spo2_low"
    BRADYCARDIA = "bradycardia"
    TACHYCARDIA = "tachycardia"
    AF = "af"
    AF_RVR = "af_rvr"
    VT = "vt"
    VT_SUSTAINED = "vt_sustained"
    PAUSE = "pause"
    ASYSTOLE = "asystole"
    PVC_FREQUENT = "pvc_frequent"
    MISSED_READINGS = "missed_readings"
    DEVICE_OFFLINE = "device_offline"
    LEAD_OFF = "lead_off"
    BATTERY_LOW = "battery_low"


TECHNICAL_CONDITIONS = frozenset(
    {Condition.MISSED_READINGS, Condition.DEVICE_OFFLINE, Condition.LEAD_OFF, Condition.BATTERY_LOW}
)


class DeviceKind(str, enum.Enum):
    BLOOD_PRESSURE = "blood_pressure"
    GLUCOSE = "glucose"
    ECG = "ecg"  # a patch: 1-s frames, and screening strips taken with it
    SPO2 = "spo2"
    ECG_HANDHELD = "ecg_handheld"  # a lead-I handheld (thumbs on electrodes): screening strips only


# ---------------------------------------------------------------- readings


class _Reading(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ts: datetime = Field(description="device time of the measurement")
    seq: int | None = Field(default=None, ge=0, le=2**32)

    @field_validator("ts")
    @classmethod
    def _zone(cls, v: datetime) -> datetime:
        # Device clocks carry no zone (GATT Date Time); read naive times as clinic time.
        return v.replace(tzinfo=CHINA_TZ) if v.tzinfo is None else v


class BpStatusFlags(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    body_movement: bool = False
    irregular_pulse: bool = False
    cuff_loose: bool = False
    improper_position: bool = False

    @property
    def questionable(self) -> bool:
        """A flagged reading never confirms a crisis (docs/spec/clinical-rules.md §BP readings)."""
        return self.body_movement or self.cuff_loose or self.improper_position


class BloodPressureReading(_Reading):
    kind: Literal["blood_pressure"] = "blood_pressure"
    systolic: float
    diastolic: float
    pulse: float | None = None
    unit: Literal["mmHg"] = "mmHg"
    status: BpStatusFlags = Field(default_factory=BpStatusFlags)
    user_id: int | None = None


class GlucoseReading(_Reading):
    kind: Literal["glucose"] = "glucose"
    mmol_l: float | None = Field(default=None, description="None only when the meter said HI or LO")
    meal: Literal["preprandial", "postprandial", "fasting", "casual", "bedtime"] | None = None
    range: Literal["hi", "lo"] | None = Field(default=None, description="meter out of its measuring range")
    flags: list[str] = Field(default_factory=list, description="meter status bits worth a look")


class EcgFrame(_Reading):
    kind: Literal["ecg"] = "ecg"
    fs: float = Field(ge=100, le=1000)
    samples_uv: list[float] = Field(min_length=1, max_length=20000)
    lead_off: bool = False


class Spo2Reading(_Reading):
    kind: Literal["spo2"] = "spo2"
    spo2: float
    pulse: float | None = None


class HeartRateReading(_Reading):
    """From a 0x2A37 Heart Rate Measurement (chest straps, patches)."""

    kind: Literal["heart_rate"] = "heart_rate"
    bpm: float
    rr_ms: list[float] = Field(default_factory=list)
    contact: bool | None = None


class BatteryReading(_Reading):
    kind: Literal["battery"] = "battery"
    percent: int = Field(ge=0, le=100)


class EcgSummary(_Reading):
    """Per-patient, per-minute digest published instead of raw frames."""

    kind: Literal["ecg_summary"] = "ecg_summary"
    hr_bpm: float | None = None
    rhythm: str = "unknown"
    beats: dict[str, int] = Field(default_factory=dict)
    quality: float | None = None
    lead_off_s: float = 0.0
    window_s: float = 60.0


STRIP_SECONDS = (9.0, 60.0)  # a screening strip's length (docs/ecg-screening.md)
STRIP_MAX_SAMPLES = 30_000  # 60 s at 500 Hz; as JSON at most ~210 kB, under the ingress limit


class EcgStripReading(_Reading):
    """A short single-lead strip for AF screening, as one message: a handheld's 30-s check or a patch's.

    `ts` is the device time of the first sample; `strip_id` is the device's own id for the strip,
    so a redelivered or resent strip is the same strip. Samples are integers in µV within the
    int16 range (±32.7 mV, far beyond any ECG: the store keeps them as int16).
    """

    kind: Literal["ecg_strip"] = "ecg_strip"
    strip_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    fs: float = Field(ge=125, le=500, description="Hz")
    samples_uv: list[Annotated[int, Field(ge=-32768, le=32767)]] = Field(min_length=1, max_length=STRIP_MAX_SAMPLES)
    lead: str | None = Field(default=None, max_length=16, description="e.g. I (a handheld's thumbs), II")

    @model_validator(mode="after")
    def _length(self) -> EcgStripReading:
        seconds = len(self.samples_uv) / self.fs
        if not STRIP_SECONDS[0] <= seconds <= STRIP_SECONDS[1]:
            raise ValueError(
                f"the strip is {seconds:.1f} s ({len(self.samples_uv)} samples at {self.fs:g} Hz); "
                f"a screening strip is {STRIP_SECONDS[0]:g} to {STRIP_SECONDS[1]:g} s"
            )
        return self


class ScreenedStrip(_Reading):
    """A strip with its screening result: what the stream stores and republishes (kind `ecg_strip`).

    The republished reading is the result without the samples (thin uplinks): `samples_uv` is
    excluded from the public payload and kept only in the reading store. A screening, not an
    alert: nobody is paged; `af` and `other` go on the console's referral list.
    """

    kind: Literal["ecg_strip"] = "ecg_strip"
    strip_id: str
    fs: float
    seconds: float
    lead: str | None = None
    label: Literal["normal", "af", "other", "noisy"]
    confidence: float = Field(ge=0, le=1, description="the model's probability of the label")
    hr_bpm: float | None = None
    beats: int = 0
    probabilities: dict[str, float] = Field(default_factory=dict)
    model: str = Field(description="the screening model's version, e.g. screen-v4")
    samples_uv: list[int] = Field(default_factory=list, exclude=True, repr=False)


DeviceReading = Annotated[
    BloodPressureReading
    | GlucoseReading
    | EcgFrame
    | Spo2Reading
    | HeartRateReading
    | BatteryReading
    | EcgStripReading,
    Field(discriminator="kind"),
]
AnyReading = Union[  # noqa: UP007 (a runtime alias; kept as written)
    BloodPressureReading,
    GlucoseReading,
    EcgFrame,
    Spo2Reading,
    HeartRateReading,
    BatteryReading,
    EcgSummary,
    EcgStripReading,
    ScreenedStrip,
]

# Which reading kinds a configured device kind may send.
KINDS_FOR_DEVICE: dict[DeviceKind, frozenset[str]] = {
    DeviceKind.BLOOD_PRESSURE: frozenset({"blood_pressure", "battery"}),
    DeviceKind.GLUCOSE: frozenset({"glucose", "battery"}),
    DeviceKind.ECG: frozenset({"ecg", "heart_rate", "battery", "ecg_strip"}),
    DeviceKind.SPO2: frozenset({"spo2", "heart_rate", "battery"}),
    DeviceKind.ECG_HANDHELD: frozenset({"ecg_strip", "battery"}),
}


class Accepted(BaseModel):
    """A reading that passed decoding, bound to its patient by the config."""

    model_config = ConfigDict(frozen=True)

    reading: AnyReading
    patient_id: str
    device_id: str
    received_at: datetime
    source: Literal["mqtt_json", "mqtt_gatt", "ble", "internal"] = "mqtt_json"
    idempotency_key: str

    def to_public(self) -> dict[str, Any]:
        """The `vg/{clinic}/patient/{id}/reading` payload."""
        body = self.reading.model_dump(mode="json", exclude_none=True)
        body["ts"] = iso(self.reading.ts)
        body.update(patient_id=self.patient_id, device_id=self.device_id, received_at=iso(self.received_at))
        return body

    def public_json(self) -> str:
        """`to_public()` as JSON; the store and the live republish of one reading encode it once."""
        return self.public_parts()[1]

    def public_parts(self) -> tuple[dict[str, Any], str]:
        """(to_public(), its JSON), kept for the last reading asked (do not change the dict)."""
        global _last_public
        last = _last_public
        if last[0] is self:  # (frozen, and held here: the identity cannot be reused meanwhile)
            return last[1], last[2]
        body = self.to_public()
        text = json.dumps(body, ensure_ascii=False)
        _last_public = (self, body, text)
        return body, text


_last_public: tuple[Accepted | None, dict[str, Any], str] = (None, {}, "")  # by identity, not equality


class Rejected(BaseModel):
    """Why a payload did not become a reading; counted by `reason`."""

    model_config = ConfigDict(frozen=True)

    reason: str  # short machine key, e.g. "malformed_json", "implausible_value"
    detail: str  # what a technician reads in the log
    device_id: str | None = None
    topic: str | None = None


# ---------------------------------------------------------------- alerts


class AlertState(str, enum.Enum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Finding(BaseModel):
    """What a rule or detector concluded about one patient; the dispatcher routes it.

    `active=False` means the condition cleared. `follow_up` marks findings
    from back-filled readings, which never go to acute tiers.
    """

    model_config = ConfigDict(frozen=True)

    patient_id: str
    condition: Condition
    active: bool = True
    severity: Severity | None = None  # None = the route's default
    tier: Tier | None = None  # None = the route's default
    at: datetime  # device time of the reading that made it true
    evidence: dict[str, Any] = Field(default_factory=dict)
    follow_up: bool = False


class Alert(BaseModel):
    """The `vg/{clinic}/alert/{tier}` payload, plus bookkeeping kept in SQLite."""

    alert_id: str
    patient_id: str
    clinic: str
    tier: Tier
    condition: Condition
    severity: Severity
    state: AlertState = AlertState.FIRING
    opened_at: datetime
    updated_at: datetime
    escalated_from: Tier | None = None
    acknowledged_by: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)

    def to_public(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "patient_id": self.patient_id,
            "clinic": self.clinic,
            "tier": self.tier.value,
            "condition": self.condition.value,
            "severity": self.severity.value,
            "state": self.state.value,
            "opened_at": iso(self.opened_at),
            "updated_at": iso(self.updated_at),
            "escalated_from": self.escalated_from.value if self.escalated_from else None,
            "acknowledged_by": self.acknowledged_by,
            "evidence": self.evidence,
        }


class AckMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    alert_id: str = Field(min_length=1, max_length=200)
    by: str = Field(min_length=1, max_length=200)


# ---------------------------------------------------------------- durations

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


MAX_DURATION = timedelta(days=3650)


def parse_duration(value: object) -> timedelta:
    """'90s', '10m', '4h', '1d', '1h30m' (or a number of seconds) -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value >= 0:  # also NaN
            raise ValueError("must not be negative")
        return _bounded(timedelta(seconds=min(float(value), MAX_DURATION.total_seconds() + 1)), value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a duration such as 90s, 10m or 4h")
    text = value.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"{value!r} is not a duration; write it like 90s, 10m or 4h")
    secs = sum(float(n) * _UNITS[u] for n, u in parts)
    return _bounded(timedelta(seconds=min(secs, MAX_DURATION.total_seconds() + 1)), value)


def _bounded(d: timedelta, value: object) -> timedelta:
    # "99999999d" overflowed the date arithmetic after it (an HTTP 500); nothing here lasts ten years
    if d > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than {MAX_DURATION.days} days")
    return d


def format_seconds(seconds: float | None) -> str:
    """A duration as the command line prints it: 90 -> '1m30s', 3600 -> '1h', None -> '-'."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m" if m else f"{h}h"
    if m:
        return f"{m}m{sec:02d}s" if sec else f"{m}m"
    return f"{sec}s"


def _duration_validator(v: object) -> timedelta:
    return parse_duration(v)


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration_validator),
    PlainSerializer(lambda td: f"{int(td.total_seconds())}s", return_type=str),
]
