"""Pure byte codecs for the GATT characteristics vitalgate reads.

No I/O lives here: every function takes ``bytes`` (what bleak hands a notify
callback, or the binary payload of ``vg/{clinic}/device/{id}/gatt/{uuid16}``)
and returns frozen dataclasses, or builds the bytes to write to a control point.
The layouts and test vectors are in ``docs/spec/gatt.md``.

Conventions
-----------
* All multi-byte GATT fields are little-endian.
* IEEE-11073 special values (NaN, NRes, +/-INF, reserved) come back as
  :class:`Special` members, never as numbers and never as ``float('nan')``: a
  NaN float would silently pass ``<``/``>`` threshold checks downstream.
* Every malformed input raises :class:`GattDecodeError` (a ``ValueError``) whose
  message names the characteristic and says what is wrong. No ``IndexError`` or
  ``struct.error`` escapes, because the gateway must reject a bad payload with a
  reason and carry on with the next one.
* Device times (:class:`DateTime7`) carry no time zone; the caller attaches the
  device's zone (normally ``+08:00``) when converting.
"""

from __future__ import annotations

import calendar
import enum
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

import numpy as np

__all__ = [
    "GattDecodeError",
    "Special",
    "Number",
    "decode_sfloat",
    "decode_float",
    "read_sfloat",
    "read_float",
    "DateTime7",
    "decode_date_time",
    "CurrentTime",
    "decode_current_time",
    "encode_current_time",
    "decode_battery_level",
    "BpStatus",
    "BpMeasurement",
    "decode_bp_measurement",
    "GlucoseMeasurement",
    "decode_glucose_measurement",
    "GlucoseContext",
    "decode_glucose_context",
    "HeartRateMeasurement",
    "decode_heart_rate",
    "racp_report_from_seq",
    "racp_report_all",
    "racp_report_last",
    "racp_report_count",
    "racp_abort",
    "RacpResponse",
    "decode_racp_response",
    "POLAR_PMD_SERVICE_UUID",
    "POLAR_PMD_CONTROL_UUID",
    "POLAR_PMD_DATA_UUID",
    "POLAR_PMD_START_ECG",
    "POLAR_PMD_STOP_ECG",
    "PolarPmdResponse",
    "decode_polar_pmd_response",
    "PolarEcgFrame",
    "decode_polar_pmd_ecg",
    "VENDOR_ECG_SERVICE_UUID",
    "VENDOR_ECG_DATA_UUID",
    "VENDOR_ECG_VERSION",
    "VENDOR_ECG_HEADER_LEN",
    "VENDOR_ECG_MAX_SAMPLES",
    "VendorEcgFrame",
    "encode_vendor_ecg_frame",
    "decode_vendor_ecg_frame",
    "uuid16",
]


class GattDecodeError(ValueError):
    """A characteristic value could not be decoded.

    ``str(err)`` is a human-readable reason that names the characteristic,
    e.g. ``"2a35/2a36: 5 bytes, need at least 7 (flags + 3 SFLOAT)"``.
    """


# ---------------------------------------------------------------------------
# UUIDs
# ---------------------------------------------------------------------------

_SIG_BASE_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"


def uuid16(short: int) -> str:
    """Expand a 16-bit SIG UUID to the lower-case 128-bit string bleak uses.

    ``uuid16(0x2A35) == "00002a35-0000-1000-8000-00805f9b34fb"``.
    """
    if not 0 <= short <= 0xFFFF:
        raise ValueError(f"uuid16: {short!r} is not a 16-bit value")
    return f"0000{short:04x}{_SIG_BASE_SUFFIX}"


# ---------------------------------------------------------------------------
# IEEE-11073 SFLOAT / FLOAT
# ---------------------------------------------------------------------------


class Special(enum.Enum):
    """IEEE-11073 special values. They are never numbers."""

    NAN = "nan"
    NRES = "nres"  # "not at this resolution": the value did not fit
    POS_INF = "+inf"
    NEG_INF = "-inf"
    RESERVED = "reserved"


Number = float | Special

# Matched on the whole raw word (exponent 0), before any sign extension: after
# sign extension 0x0800 and 0x0802 look like ordinary negative mantissas.
_SFLOAT_SPECIALS: Final[dict[int, Special]] = {
    0x07FF: Special.NAN,
    0x0800: Special.NRES,
    0x07FE: Special.POS_INF,
    0x0802: Special.NEG_INF,
    0x0801: Special.RESERVED,
}
_FLOAT_SPECIALS: Final[dict[int, Special]] = {
    0x007FFFFF: Special.NAN,
    0x00800000: Special.NRES,
    0x007FFFFE: Special.POS_INF,
    0x00800002: Special.NEG_INF,
    0x00800001: Special.RESERVED,
}


def _signed(value: int, bits: int) -> int:
    sign_bit = 1 << (bits - 1)
    return (value & (sign_bit - 1)) - (value & sign_bit)


def _scaled(mantissa: int, exponent: int) -> float:
    # Decimal keeps m * 10**e exact until the final rounding to float, so the
    # SFLOAT for 36.6 compares equal to the literal 36.6 (366 * 0.1 would not).
    return float(Decimal(mantissa).scaleb(exponent))


def decode_sfloat(raw: int) -> Number:
    """Decode a raw 16-bit IEEE-11073 SFLOAT word (4-bit exponent, 12-bit mantissa)."""
    if not 0 <= raw <= 0xFFFF:
        raise GattDecodeError(f"sfloat: raw word {raw!r} is not a 16-bit value")
    special = _SFLOAT_SPECIALS.get(raw)
    if special is not None:
        return special
    return _scaled(_signed(raw & 0x0FFF, 12), _signed(raw >> 12, 4))


def decode_float(raw: int) -> Number:
    """Decode a raw 32-bit IEEE-11073 FLOAT word (8-bit exponent, 24-bit mantissa)."""
    if not 0 <= raw <= 0xFFFFFFFF:
        raise GattDecodeError(f"float: raw word {raw!r} is not a 32-bit value")
    special = _FLOAT_SPECIALS.get(raw)
    if special is not None:
        return special
    return _scaled(_signed(raw & 0xFFFFFF, 24), _signed(raw >> 24, 8))


def _need(data: bytes, offset: int, size: int, what: str) -> None:
    if offset < 0 or len(data) < offset + size:
        raise GattDecodeError(f"{what}: {len(data)} bytes, need at least {offset + size} at offset {offset}")


def read_sfloat(data: bytes, offset: int) -> Number:
    """Read a little-endian SFLOAT at ``offset``."""
    _need(data, offset, 2, "sfloat")
    return decode_sfloat(int.from_bytes(data[offset : offset + 2], "little"))


def read_float(data: bytes, offset: int) -> Number:
    """Read a little-endian FLOAT at ``offset``."""
    _need(data, offset, 4, "float")
    return decode_float(int.from_bytes(data[offset : offset + 4], "little"))


class _Reader:
    """Sequential little-endian reader that turns every shortfall into a
    GattDecodeError naming the characteristic and the missing field."""

    __slots__ = ("data", "name", "pos")

    def __init__(self, data: bytes, name: str, pos: int = 0) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise GattDecodeError(f"{name}: expected bytes, got {type(data).__name__}")
        self.data = bytes(data)
        self.name = name
        self.pos = pos

    def take(self, size: int, what: str) -> bytes:
        end = self.pos + size
        if len(self.data) < end:
            raise GattDecodeError(f"{self.name}: {len(self.data)} bytes, need at least {end} ({what})")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def s16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little", signed=True)

    def sfloat(self, what: str) -> Number:
        return decode_sfloat(self.u16(what))

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def finish(self) -> None:
        # The layout is fully determined by the flags, so extra bytes mean the
        # flags and the payload disagree: we would be guessing what they hold.
        extra = self.remaining()
        if extra:
            raise GattDecodeError(
                f"{self.name}: {extra} unexpected trailing byte(s) after offset {self.pos} "
                f"(value is {len(self.data)} bytes, flags describe {self.pos})"
            )


# ---------------------------------------------------------------------------
# Date Time 0x2A08, Current Time 0x2A2B, Battery Level 0x2A19
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DateTime7:
    """Bluetooth Date Time (0x2A08): a wall-clock time in the device's zone.

    ``year``/``month``/``day`` are ``None`` when the device sent 0 ("unknown").
    There is no time zone on the wire; see :meth:`to_datetime`.
    """

    year: int | None
    month: int | None
    day: int | None
    hour: int
    minute: int
    second: int

    @property
    def date_known(self) -> bool:
        return self.year is not None and self.month is not None and self.day is not None

    def to_datetime(self, tz: tzinfo | None) -> datetime | None:
        """Attach ``tz`` (the device's zone, e.g. UTC+8); ``None`` if the date is unknown."""
        if self.year is None or self.month is None or self.day is None:
            return None
        return datetime(self.year, self.month, self.day, self.hour, self.minute, self.second, tzinfo=tz)

    @classmethod
    def from_datetime(cls, dt: datetime) -> DateTime7:
        """Wall-clock fields of ``dt`` (its zone is dropped, as on the wire)."""
        return cls(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)


_DATE_TIME_LEN: Final = 7


def _date_time_at(reader: _Reader) -> DateTime7:
    name = reader.name
    raw = reader.take(_DATE_TIME_LEN, "date time")
    year, month, day, hour, minute, second = struct.unpack("<HBBBBB", raw)
    if year != 0 and not 1582 <= year <= 9999:
        raise GattDecodeError(f"{name}: date time year {year} is reserved (0 or 1582..9999)")
    if month > 12:
        raise GattDecodeError(f"{name}: date time month {month} is reserved (0..12)")
    if day > 31:
        raise GattDecodeError(f"{name}: date time day {day} is reserved (0..31)")
    if hour > 23 or minute > 59 or second > 59:
        raise GattDecodeError(f"{name}: date time {hour:02d}:{minute:02d}:{second:02d} is not a valid time of day")
    if month and day:
        # Leap year allowed when the year is unknown: Feb 29 may be genuine.
        max_day = calendar.monthrange(year if year else 2000, month)[1]
        if day > max_day:
            raise GattDecodeError(f"{name}: date time day {day} does not exist in month {month}")
    return DateTime7(year or None, month or None, day or None, hour, minute, second)


def decode_date_time(data: bytes, offset: int = 0) -> DateTime7:
    """Decode the 7-byte Date Time structure at ``offset``.

    Bytes after the 7 are not inspected (the structure is embedded in larger
    characteristics); reserved field values raise :class:`GattDecodeError`.
    """
    if offset < 0:
        raise GattDecodeError(f"2a08: negative offset {offset}")
    return _date_time_at(_Reader(data, "2a08", offset))


@dataclass(frozen=True)
class CurrentTime:
    """Current Time (0x2A2B).

    ``day_of_week``: 1 = Monday .. 7 = Sunday, ``None`` = unknown.
    ``fractions256``: 1/256 s units. ``adjust_reason``: raw bits (b0 manual,
    b1 external reference, b2 time-zone change, b3 DST change).
    """

    date_time: DateTime7
    day_of_week: int | None
    fractions256: int
    adjust_reason: int


_CURRENT_TIME_LEN: Final = 10


def decode_current_time(data: bytes) -> CurrentTime:
    """Decode the 10-byte Current Time value."""
    r = _Reader(data, "2a2b")
    date_time = _date_time_at(r)
    dow = r.u8("day of week")
    fractions = r.u8("fractions256")
    reason = r.u8("adjust reason")
    r.finish()
    if dow > 7:
        raise GattDecodeError(f"2a2b: day of week {dow} is reserved (0..7)")
    return CurrentTime(date_time, dow or None, fractions, reason)


def encode_current_time(dt: datetime, adjust_reason: int = 1) -> bytes:
    """Build a Current Time value from the wall-clock fields of ``dt``.

    ``dt`` must already be in the device's zone (the wire carries none). The
    default reason is b0 "manual time update", which is what a gateway setting
    the clock is.
    """
    if not 1582 <= dt.year <= 9999:
        raise ValueError(f"encode_current_time: year {dt.year} outside 1582..9999")
    if not 0 <= adjust_reason <= 0xFF:
        raise ValueError(f"encode_current_time: adjust_reason {adjust_reason} is not a uint8")
    fractions = dt.microsecond * 256 // 1_000_000
    return struct.pack(
        "<HBBBBBBBB",
        dt.year,
        dt.month,
        dt.day,
        dt.hour,
        dt.minute,
        dt.second,
        dt.isoweekday(),
        fractions,
        adjust_reason,
    )


def decode_battery_level(data: bytes) -> int:
    """Battery Level (0x2A19): percent 0..100."""
    r = _Reader(data, "2a19")
    level = r.u8("battery level")
    r.finish()
    if level > 100:
        raise GattDecodeError(f"2a19: battery level {level} is reserved (0..100 %)")
    return level


# ---------------------------------------------------------------------------
# Blood Pressure Measurement 0x2A35 / Intermediate Cuff Pressure 0x2A36
# ---------------------------------------------------------------------------

_PA_PER_MMHG: Final = Decimal("133.322")
_PULSE_RANGE: Final = ("in_range", "above", "below", "reserved")


@dataclass(frozen=True)
class BpStatus:
    """Blood-pressure measurement status bits."""

    body_movement: bool
    cuff_loose: bool
    irregular_pulse: bool
    pulse_range: str  # "in_range" | "above" | "below" | "reserved"
    improper_position: bool

    @property
    def questionable(self) -> bool:
        """Movement, loose cuff or bad position: never alert on it alone (docs/spec/clinical-rules.md §BP readings)."""
        return self.body_movement or self.cuff_loose or self.improper_position

    @classmethod
    def from_bits(cls, bits: int) -> BpStatus:
        return cls(
            body_movement=bool(bits & 0x01),
            cuff_loose=bool(bits & 0x02),
            irregular_pulse=bool(bits & 0x04),
            pulse_range=_PULSE_RANGE[(bits >> 3) & 0x03],
            improper_position=bool(bits & 0x20),
        )


@dataclass(frozen=True)
class BpMeasurement:
    """Blood Pressure Measurement (0x2A35) or Intermediate Cuff Pressure (0x2A36).

    Pressures are always mmHg: a kPa reading is converted (1 mmHg = 133.322 Pa)
    and rounded to 0.1 mmHg; ``unit`` records what the cuff sent. For 0x2A36,
    ``systolic_mmhg`` is the current cuff pressure and the other two are unused.
    ``device_time`` is device wall-clock time (no zone). ``pulse_bpm`` in beats/min.
    """

    unit: str  # "mmHg" | "kPa", as sent
    systolic_mmhg: Number
    diastolic_mmhg: Number
    map_mmhg: Number
    device_time: DateTime7 | None
    pulse_bpm: Number | None
    user_id: int | None  # 255 = unknown user, passed through
    status: BpStatus | None


def _kpa_to_mmhg(value: Number) -> Number:
    if isinstance(value, Special):
        return value
    # The cuff resolves 0.1 kPa (0.75 mmHg); more than 0.1 mmHg is noise.
    mmhg = Decimal(repr(value)) * 1000 / _PA_PER_MMHG
    return float(mmhg.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def decode_bp_measurement(data: bytes) -> BpMeasurement:
    """Decode 0x2A35 / 0x2A36 (same layout)."""
    r = _Reader(data, "2a35/2a36")
    if len(r.data) < 7:
        raise GattDecodeError(f"2a35/2a36: {len(r.data)} bytes, need at least 7 (flags + 3 SFLOAT)")
    flags = r.u8("flags")
    kpa = bool(flags & 0x01)
    systolic = r.sfloat("systolic")
    diastolic = r.sfloat("diastolic")
    mean = r.sfloat("mean arterial pressure")
    device_time = _date_time_at(r) if flags & 0x02 else None
    pulse = r.sfloat("pulse rate") if flags & 0x04 else None
    user_id = r.u8("user id") if flags & 0x08 else None
    status = BpStatus.from_bits(r.u16("measurement status")) if flags & 0x10 else None
    r.finish()
    if kpa:
        systolic, diastolic, mean = (_kpa_to_mmhg(v) for v in (systolic, diastolic, mean))
    return BpMeasurement(
        unit="kPa" if kpa else "mmHg",
        systolic_mmhg=systolic,
        diastolic_mmhg=diastolic,
        map_mmhg=mean,
        device_time=device_time,
        pulse_bpm=pulse,
        user_id=user_id,
        status=status,
    )


# ---------------------------------------------------------------------------
# Glucose Measurement 0x2A18 / Glucose Measurement Context 0x2A34
# ---------------------------------------------------------------------------

_MG_DL_PER_MMOL_L: Final = Decimal("18.016")  # glucose M = 180.16 g/mol

GLUCOSE_TYPE_CONTROL_SOLUTION: Final = 10
GLUCOSE_LOCATION_CONTROL_SOLUTION: Final = 4

# Status bits to flag as quality problems (2-4, 7-10; docs/spec/clinical-rules.md §Glucose readings).
_GLUCOSE_QUALITY_BITS: Final[tuple[tuple[int, str], ...]] = (
    (2, "sample_too_small"),
    (3, "strip_insertion_error"),
    (4, "wrong_strip"),
    (7, "temperature_too_high"),
    (8, "temperature_too_low"),
    (9, "strip_pulled_too_soon"),
    (10, "general_device_fault"),
)


def _glucose_to_mmol_l(value: Number, mol_per_l: bool) -> Number:
    if isinstance(value, Special):
        return value
    decimal_value = Decimal(repr(value))
    if mol_per_l:
        # mol/L -> mmol/L is a power of ten: exact, no rounding needed.
        return float(decimal_value.scaleb(3))
    mg_dl = decimal_value.scaleb(5)  # kg/L * 1e5 = mg/dL
    # Rounded to 0.1 mmol/L like meters display it; this also keeps the mg/dL
    # thresholds aligned (70 -> 3.9, 54 -> 3.0, 300 -> 16.7, 600 -> 33.3).
    return float((mg_dl / _MG_DL_PER_MMOL_L).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class GlucoseMeasurement:
    """Glucose Measurement (0x2A18).

    ``concentration_mmol_l`` is always mmol/L (converted from kg/L or mol/L);
    ``unit_sent`` records the wire unit. ``base_time`` is device wall-clock time;
    the user-facing time is base + ``time_offset_min`` minutes.
    ``sensor_status`` holds the raw 16 status bits.
    """

    seq: int
    base_time: DateTime7
    time_offset_min: int | None
    concentration_mmol_l: Number | None
    unit_sent: str | None  # "kg/L" | "mol/L"
    sample_type: int | None  # low nibble: 1 capillary whole blood .. 10 control solution
    sample_location: int | None  # high nibble: 1 finger .. 4 control solution, 15 n/a
    sensor_status: int | None
    context_follows: bool

    def _status_bit(self, bit: int) -> bool:
        return self.sensor_status is not None and bool(self.sensor_status >> bit & 1)

    @property
    def is_control_solution(self) -> bool:
        """A control-solution test, not the patient's blood: reject it (docs/spec/clinical-rules.md §Glucose readings)."""
        return (
            self.sample_type == GLUCOSE_TYPE_CONTROL_SOLUTION
            or self.sample_location == GLUCOSE_LOCATION_CONTROL_SOLUTION
        )

    @property
    def is_hi(self) -> bool:
        """Above the device's range ("HI"): status b5 or +INF concentration."""
        return self._status_bit(5) or self.concentration_mmol_l is Special.POS_INF

    @property
    def is_lo(self) -> bool:
        """Below the device's range ("LO"): status b6 or -INF concentration."""
        return self._status_bit(6) or self.concentration_mmol_l is Special.NEG_INF

    @property
    def battery_low(self) -> bool:
        return self._status_bit(0)

    @property
    def sensor_malfunction(self) -> bool:
        return self._status_bit(1)

    @property
    def time_fault(self) -> bool:
        """Status b11: the device says its clock is suspect."""
        return self._status_bit(11)

    @property
    def quality_flags(self) -> list[str]:
        """Names of the set quality bits 2-4 and 7-10, in bit order."""
        return [name for bit, name in _GLUCOSE_QUALITY_BITS if self._status_bit(bit)]

    def device_time_with_offset(self) -> DateTime7 | None:
        """User-facing device time (base + offset), still zone-less.

        ``None`` when an offset must be applied but the base date is unknown
        (minutes cannot be added across an unknown day boundary).
        """
        if not self.time_offset_min:
            return self.base_time
        base = self.base_time.to_datetime(None)
        if base is None:
            return None
        try:
            shifted = base + timedelta(minutes=self.time_offset_min)
        except OverflowError:  # 9999-12-31 plus a positive offset
            return None
        return DateTime7.from_datetime(shifted)

    def user_facing_datetime(self, tz: tzinfo | None) -> datetime | None:
        """:meth:`device_time_with_offset` with the device's zone attached."""
        shifted = self.device_time_with_offset()
        return None if shifted is None else shifted.to_datetime(tz)


def decode_glucose_measurement(data: bytes) -> GlucoseMeasurement:
    """Decode 0x2A18."""
    r = _Reader(data, "2a18")
    flags = r.u8("flags")
    seq = r.u16("sequence number")
    base_time = _date_time_at(r)
    offset = r.s16("time offset") if flags & 0x01 else None
    concentration: Number | None = None
    unit_sent = sample_type = location = None
    if flags & 0x02:
        mol_per_l = bool(flags & 0x04)
        concentration = _glucose_to_mmol_l(r.sfloat("concentration"), mol_per_l)
        unit_sent = "mol/L" if mol_per_l else "kg/L"
        type_location = r.u8("type/sample location")
        sample_type = type_location & 0x0F
        location = type_location >> 4
    status = r.u16("sensor status annunciation") if flags & 0x08 else None
    r.finish()
    return GlucoseMeasurement(
        seq=seq,
        base_time=base_time,
        time_offset_min=offset,
        concentration_mmol_l=concentration,
        unit_sent=unit_sent,
        sample_type=sample_type,
        sample_location=location,
        sensor_status=status,
        context_follows=bool(flags & 0x10),
    )


_MEALS: Final[dict[int, str]] = {
    1: "preprandial",
    2: "postprandial",
    3: "fasting",
    4: "casual",
    5: "bedtime",
}


@dataclass(frozen=True)
class GlucoseContext:
    """Glucose Measurement Context (0x2A34); ``seq`` matches the 0x2A18 record.

    Fields absent from the value are ``None``. Unknown code values are kept
    raw (``meal_raw``, ``tester``, ``health``...); ``meal`` is ``None`` for them.
    """

    seq: int
    meal: str | None
    tester: int | None  # 1 self, 2 health-care professional, 3 lab, 15 n/a
    health: int | None  # 1 minor, 2 major, 3 menses, 4 stress, 5 none, 15 n/a
    carbohydrate_id: int | None = None
    carbohydrate_kg: Number | None = None
    meal_raw: int | None = None
    exercise_duration_s: int | None = None  # 65535 = "overrun" per spec, passed through
    exercise_intensity_pct: int | None = None
    medication_id: int | None = None
    medication_amount: Number | None = None  # in medication_unit
    medication_unit: str | None = None  # "kg" | "L"
    hba1c_pct: Number | None = None
    extended_flags: int | None = None


def decode_glucose_context(data: bytes) -> GlucoseContext:
    """Decode 0x2A34, skipping exactly the fields its flags announce."""
    r = _Reader(data, "2a34")
    flags = r.u8("flags")
    seq = r.u16("sequence number")
    extended = r.u8("extended flags") if flags & 0x80 else None
    carb_id = carb_kg = None
    if flags & 0x01:
        carb_id = r.u8("carbohydrate id")
        carb_kg = r.sfloat("carbohydrate")
    meal_raw = r.u8("meal") if flags & 0x02 else None
    tester = health = None
    if flags & 0x04:
        tester_health = r.u8("tester/health")
        tester, health = tester_health & 0x0F, tester_health >> 4
    duration = intensity = None
    if flags & 0x08:
        duration = r.u16("exercise duration")
        intensity = r.u8("exercise intensity")
    med_id = med_amount = med_unit = None
    if flags & 0x10:
        med_id = r.u8("medication id")
        med_amount = r.sfloat("medication")
        med_unit = "L" if flags & 0x20 else "kg"
    hba1c = r.sfloat("hba1c") if flags & 0x40 else None
    # Extended flags are RFU: if a device sets them, fields we cannot know may
    # follow, so only insist on an exact length when they are absent or zero.
    if not extended:
        r.finish()
    return GlucoseContext(
        seq=seq,
        meal=_MEALS.get(meal_raw) if meal_raw is not None else None,
        tester=tester,
        health=health,
        carbohydrate_id=carb_id,
        carbohydrate_kg=carb_kg,
        meal_raw=meal_raw,
        exercise_duration_s=duration,
        exercise_intensity_pct=intensity,
        medication_id=med_id,
        medication_amount=med_amount,
        medication_unit=med_unit,
        hba1c_pct=hba1c,
        extended_flags=extended,
    )


# ---------------------------------------------------------------------------
# Heart Rate Measurement 0x2A37
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HeartRateMeasurement:
    """Heart Rate Measurement (0x2A37).

    ``sensor_contact``: ``None`` = the sensor cannot detect contact, ``False`` =
    it can and reports no skin contact (suppress rhythm alarms), ``True`` = contact.
    ``energy_kj`` in kilojoules; ``rr_ms`` in milliseconds, oldest first.
    """

    bpm: int
    sensor_contact: bool | None
    energy_kj: int | None
    rr_ms: tuple[float, ...]


def decode_heart_rate(data: bytes) -> HeartRateMeasurement:
    """Decode 0x2A37."""
    r = _Reader(data, "2a37")
    flags = r.u8("flags")
    bpm = r.u16("heart rate (uint16)") if flags & 0x01 else r.u8("heart rate (uint8)")
    contact_bits = (flags >> 1) & 0x03
    contact = None if contact_bits < 2 else contact_bits == 3
    energy = r.u16("energy expended") if flags & 0x08 else None
    rr: tuple[float, ...] = ()
    if flags & 0x10:
        left = r.remaining()
        if left % 2:
            raise GattDecodeError(f"2a37: RR-interval field is {left} bytes, not a whole number of uint16")
        # 1/1024 s units; *1000/1024 is exact in binary floating point.
        rr = tuple(v * 1000 / 1024 for (v,) in struct.iter_unpack("<H", r.take(left, "rr intervals")))
    r.finish()
    return HeartRateMeasurement(bpm=bpm, sensor_contact=contact, energy_kj=energy, rr_ms=rr)


# ---------------------------------------------------------------------------
# Record Access Control Point 0x2A52
# ---------------------------------------------------------------------------

RACP_OP_REPORT: Final = 0x01
RACP_OP_DELETE: Final = 0x02
RACP_OP_ABORT: Final = 0x03
RACP_OP_REPORT_COUNT: Final = 0x04
RACP_OP_COUNT_RESPONSE: Final = 0x05
RACP_OP_RESPONSE_CODE: Final = 0x06

RACP_OPERATOR_NULL: Final = 0x00
RACP_OPERATOR_ALL: Final = 0x01
RACP_OPERATOR_GE: Final = 0x03
RACP_OPERATOR_LAST: Final = 0x06
RACP_FILTER_SEQ: Final = 0x01

RACP_SUCCESS: Final = 1
RACP_NO_RECORDS: Final = 6

_RACP_CODES: Final[dict[int, str]] = {
    1: "success",
    2: "op_code_not_supported",
    3: "invalid_operator",
    4: "operator_not_supported",
    5: "invalid_operand",
    6: "no_records_found",
    7: "abort_unsuccessful",
    8: "procedure_not_completed",
    9: "operand_not_supported",
}


def racp_report_from_seq(seq: int) -> bytes:
    """ "Report stored records with sequence number >= seq": ``01 03 01 <uint16 le>``."""
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"racp_report_from_seq: seq {seq} is not a uint16")
    return bytes((RACP_OP_REPORT, RACP_OPERATOR_GE, RACP_FILTER_SEQ)) + seq.to_bytes(2, "little")


def racp_report_all() -> bytes:
    """``01 01``: resend everything (used to resync when seq goes backwards)."""
    return bytes((RACP_OP_REPORT, RACP_OPERATOR_ALL))


def racp_report_last() -> bytes:
    """``01 06``: the most recent record only."""
    return bytes((RACP_OP_REPORT, RACP_OPERATOR_LAST))


def racp_report_count() -> bytes:
    """``04 01``: number of stored records (answered by a count response)."""
    return bytes((RACP_OP_REPORT_COUNT, RACP_OPERATOR_ALL))


def racp_abort() -> bytes:
    """``03 00``: abort the running procedure."""
    return bytes((RACP_OP_ABORT, RACP_OPERATOR_NULL))


@dataclass(frozen=True)
class RacpResponse:
    """An RACP indication.

    ``kind == "count"``: ``count`` is set. ``kind == "response_code"``:
    ``request_op`` is the op code being answered, ``code`` the result
    (1 success, 6 no records, ...), ``code_name`` its name or ``None`` if unknown.
    """

    kind: str  # "response_code" | "count"
    request_op: int | None
    code: int | None
    code_name: str | None
    count: int | None

    @property
    def ends_procedure(self) -> bool:
        """A response code (of any value) ends a report/delete/abort procedure."""
        return self.kind == "response_code"

    @property
    def ok(self) -> bool:
        return self.kind == "count" or self.code in (RACP_SUCCESS, RACP_NO_RECORDS)


def decode_racp_response(data: bytes) -> RacpResponse:
    """Decode a 0x2A52 indication: ``05 00 <uint16 count>`` or ``06 00 <op> <code>``."""
    r = _Reader(data, "2a52")
    op = r.u8("op code")
    operator = r.u8("operator")
    if op == RACP_OP_COUNT_RESPONSE:
        count = r.u16("record count")
        kind = "count"
    elif op == RACP_OP_RESPONSE_CODE:
        request_op = r.u8("request op code")
        code = r.u8("response code")
        kind = "response_code"
    else:
        raise GattDecodeError(f"2a52: op code {op} is not a response (expected 5 or 6)")
    if operator != RACP_OPERATOR_NULL:
        raise GattDecodeError(f"2a52: response operator {operator}, expected 0 (null)")
    r.finish()
    if kind == "count":
        return RacpResponse("count", None, None, None, count)
    return RacpResponse("response_code", request_op, code, _RACP_CODES.get(code), None)


# ---------------------------------------------------------------------------
# Polar H10 PMD (Polar Measurement Data) service
# ---------------------------------------------------------------------------

POLAR_PMD_SERVICE_UUID: Final = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
POLAR_PMD_CONTROL_UUID: Final = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"  # read/write/indicate
POLAR_PMD_DATA_UUID: Final = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"  # notify

# start, type 0 (ECG), setting 0 (rate) x1 = 0x0082 (130 Hz), setting 1 (resolution) x1 = 14 bit
POLAR_PMD_START_ECG: Final = bytes.fromhex("02 00 00 01 82 00 01 01 0E 00")
POLAR_PMD_STOP_ECG: Final = bytes.fromhex("03 00")
POLAR_H10_ECG_FS: Final = 130.0

_POLAR_EPOCH: Final = datetime(2000, 1, 1)
_POLAR_HEADER_LEN: Final = 10


@dataclass(frozen=True)
class PolarPmdResponse:
    """PMD control-point reply ``F0 <op> <type> <status> [params]``; status 0 = ok."""

    op: int
    measurement_type: int
    status: int
    params: bytes

    @property
    def ok(self) -> bool:
        return self.status == 0


def decode_polar_pmd_response(data: bytes) -> PolarPmdResponse:
    """Decode a PMD control-point indication."""
    r = _Reader(data, "polar pmd control")
    marker = r.u8("response marker")
    if marker != 0xF0:
        raise GattDecodeError(f"polar pmd control: first byte 0x{marker:02x}, expected 0xf0 (response)")
    op = r.u8("op code")
    meas_type = r.u8("measurement type")
    status = r.u8("status")
    return PolarPmdResponse(op, meas_type, status, r.take(r.remaining(), "parameters"))


@dataclass(frozen=True)
class PolarEcgFrame:
    """One Polar H10 ECG notification.

    ``last_sample_ns_since_2000``: sensor clock (ns since 2000-01-01T00:00, zone-less,
    resets when the H10 shuts down) of the *last* sample. ``samples_uv`` in µV,
    spaced 1/``fs`` s. The H10 has no lead-off bit: use 0x2A37 sensor contact.
    """

    last_sample_ns_since_2000: int
    samples_uv: tuple[int, ...]
    fs: float = POLAR_H10_ECG_FS

    def sample_times_ns_since_2000(self) -> tuple[int, ...]:
        """Sensor-clock time of every sample, derived back from the last one."""
        n = len(self.samples_uv)
        last = self.last_sample_ns_since_2000
        return tuple(last - round((n - 1 - i) * 1e9 / self.fs) for i in range(n))

    def last_sample_time(self) -> datetime:
        """Sensor-clock time of the last sample as a naive datetime (µs resolution)."""
        return _POLAR_EPOCH + timedelta(microseconds=self.last_sample_ns_since_2000 // 1000)


def decode_polar_pmd_ecg(data: bytes) -> PolarEcgFrame:
    """Decode an uncompressed H10 ECG (type 0, frame type 0) PMD data notification."""
    r = _Reader(data, "polar pmd ecg")
    meas_type = r.u8("measurement type")
    if meas_type != 0:
        raise GattDecodeError(f"polar pmd ecg: measurement type {meas_type} is not ECG (0)")
    timestamp = int.from_bytes(r.take(8, "timestamp"), "little")
    frame_type = r.u8("frame type")
    if frame_type & 0x80:
        raise GattDecodeError(
            f"polar pmd ecg: compressed (delta) frame type 0x{frame_type:02x} is not supported; "
            "start ECG without compression"
        )
    if frame_type != 0:
        raise GattDecodeError(f"polar pmd ecg: frame type {frame_type} not supported (H10 ECG is type 0)")
    body = r.take(r.remaining(), "samples")
    if not body:
        raise GattDecodeError("polar pmd ecg: frame carries no samples")
    if len(body) % 3:
        raise GattDecodeError(f"polar pmd ecg: {len(body)} sample bytes, not a multiple of 3 (int24)")
    samples = tuple(int.from_bytes(body[i : i + 3], "little", signed=True) for i in range(0, len(body), 3))
    return PolarEcgFrame(last_sample_ns_since_2000=timestamp, samples_uv=samples, fs=POLAR_H10_ECG_FS)


# ---------------------------------------------------------------------------
# Vendor ECG frame (our own patches) — specified in docs/vendor_ecg.md
# ---------------------------------------------------------------------------

# Nordic-UART-shaped: one random 128-bit base, 16-bit slot in bytes 2-3
# (0001 service, 0003 notify data; 0002 reserved for a future control point).
VENDOR_ECG_SERVICE_UUID: Final = "5a7e0001-3c1d-4b9a-8f6e-2d4c9b1e7a30"
VENDOR_ECG_DATA_UUID: Final = "5a7e0003-3c1d-4b9a-8f6e-2d4c9b1e7a30"

VENDOR_ECG_VERSION: Final = 0x01
VENDOR_ECG_HEADER_LEN: Final = 10
# A GATT attribute value is at most 512 bytes: (512 - 10) // 2 samples.
VENDOR_ECG_MAX_SAMPLES: Final = (512 - VENDOR_ECG_HEADER_LEN) // 2
VENDOR_ECG_FS_MIN: Final = 125
VENDOR_ECG_FS_MAX: Final = 1000

_VENDOR_FLAG_LEAD_OFF: Final = 0x01
_VENDOR_FLAG_SATURATED: Final = 0x02
_VENDOR_FLAGS_KNOWN: Final = _VENDOR_FLAG_LEAD_OFF | _VENDOR_FLAG_SATURATED
_VENDOR_HEADER: Final = struct.Struct("<BBHHHH")
_INT16_FULL_SCALE: Final = (-32768, 32767)


@dataclass(frozen=True, eq=False)
class VendorEcgFrame:
    """One notification from a vitalgate ECG patch (format v1, docs/vendor_ecg.md).

    ``seq``: uint16 frame counter (wraps). ``fs``: sample rate in Hz.
    ``uv_per_lsb``: µV per ADC count. ``lead_off``: electrode off at any point
    in the frame. ``saturated``: the front end clipped somewhere in the frame.
    ``samples``: raw int16 counts (read-only array); see :meth:`samples_uv`.
    """

    seq: int
    fs: int
    uv_per_lsb: float
    lead_off: bool
    saturated: bool
    samples: np.ndarray

    def samples_uv(self) -> np.ndarray:
        """Samples in µV as float64."""
        return self.samples.astype(np.float64) * self.uv_per_lsb

    def full_scale_mask(self) -> np.ndarray:
        """True where a sample sits at int16 full scale (clipped even if b1 is unset)."""
        return (self.samples == _INT16_FULL_SCALE[0]) | (self.samples == _INT16_FULL_SCALE[1])

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.fs

    def __eq__(self, other: object) -> bool:
        # numpy arrays do not compare to a single bool, so spell equality out.
        if not isinstance(other, VendorEcgFrame):
            return NotImplemented
        return (self.seq, self.fs, self.uv_per_lsb, self.lead_off, self.saturated) == (
            other.seq,
            other.fs,
            other.uv_per_lsb,
            other.lead_off,
            other.saturated,
        ) and np.array_equal(self.samples, other.samples)

    __hash__ = None  # type: ignore[assignment]  # holds an array


def _uv_per_lsb_to_wire(uv_per_lsb: float) -> int:
    hundredths = round(uv_per_lsb * 100)
    # Refuse scales the wire cannot carry exactly rather than silently mis-scale.
    if not 1 <= hundredths <= 0xFFFF or abs(uv_per_lsb * 100 - hundredths) > 1e-6:
        raise ValueError(
            f"encode_vendor_ecg_frame: uv_per_lsb {uv_per_lsb!r} must be a multiple of 0.01 in 0.01..655.35"
        )
    return hundredths


def encode_vendor_ecg_frame(
    seq: int,
    fs: int,
    uv_per_lsb: float,
    lead_off: bool,
    samples: np.ndarray,
    *,
    saturated: bool | None = None,
) -> bytes:
    """Build a v1 vendor ECG frame (for simulators and tests).

    ``saturated=None`` sets the flag when any sample sits at int16 full scale;
    a real patch sets it from its front end's clip detector instead.
    Raises ``ValueError`` for arguments the format cannot carry.
    """
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"encode_vendor_ecg_frame: seq {seq} is not a uint16")
    if not VENDOR_ECG_FS_MIN <= fs <= VENDOR_ECG_FS_MAX:
        raise ValueError(f"encode_vendor_ecg_frame: fs {fs} Hz outside {VENDOR_ECG_FS_MIN}..{VENDOR_ECG_FS_MAX}")
    scale = _uv_per_lsb_to_wire(uv_per_lsb)
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise ValueError(f"encode_vendor_ecg_frame: samples must be 1-D, got shape {arr.shape}")
    if not 1 <= arr.size <= VENDOR_ECG_MAX_SAMPLES:
        raise ValueError(f"encode_vendor_ecg_frame: {arr.size} samples, must be 1..{VENDOR_ECG_MAX_SAMPLES}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("encode_vendor_ecg_frame: samples must be integer ADC counts")
    if arr.min() < -32768 or arr.max() > 32767:
        raise ValueError("encode_vendor_ecg_frame: samples outside int16 range")
    counts = arr.astype("<i2")
    if saturated is None:
        saturated = bool(np.any((counts == _INT16_FULL_SCALE[0]) | (counts == _INT16_FULL_SCALE[1])))
    flags = (_VENDOR_FLAG_LEAD_OFF if lead_off else 0) | (_VENDOR_FLAG_SATURATED if saturated else 0)
    header = _VENDOR_HEADER.pack(VENDOR_ECG_VERSION, flags, seq, fs, scale, counts.size)
    return header + counts.tobytes()


def decode_vendor_ecg_frame(data: bytes) -> VendorEcgFrame:
    """Decode and validate a v1 vendor ECG frame."""
    name = "vendor ecg"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise GattDecodeError(f"{name}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < VENDOR_ECG_HEADER_LEN:
        raise GattDecodeError(f"{name}: {len(data)} bytes, need at least {VENDOR_ECG_HEADER_LEN} (header)")
    version, flags, seq, fs, scale, count = _VENDOR_HEADER.unpack_from(data)
    if version != VENDOR_ECG_VERSION:
        raise GattDecodeError(f"{name}: format version {version}, only {VENDOR_ECG_VERSION} is supported")
    if flags & ~_VENDOR_FLAGS_KNOWN:
        raise GattDecodeError(f"{name}: reserved flag bits set (flags 0x{flags:02x})")
    if not VENDOR_ECG_FS_MIN <= fs <= VENDOR_ECG_FS_MAX:
        raise GattDecodeError(f"{name}: sample rate {fs} Hz outside {VENDOR_ECG_FS_MIN}..{VENDOR_ECG_FS_MAX}")
    if scale == 0:
        raise GattDecodeError(f"{name}: scale 0 µV/LSB")
    if not 1 <= count <= VENDOR_ECG_MAX_SAMPLES:
        raise GattDecodeError(f"{name}: sample count {count}, must be 1..{VENDOR_ECG_MAX_SAMPLES}")
    expected = VENDOR_ECG_HEADER_LEN + 2 * count
    if len(data) != expected:
        raise GattDecodeError(f"{name}: {len(data)} bytes, header announces {count} samples = {expected} bytes")
    samples = np.frombuffer(data, dtype="<i2", offset=VENDOR_ECG_HEADER_LEN).astype(np.int16)
    samples.setflags(write=False)  # the dataclass is frozen; keep its payload frozen too
    return VendorEcgFrame(
        seq=seq,
        fs=fs,
        uv_per_lsb=float(Decimal(scale).scaleb(-2)),
        lead_off=bool(flags & _VENDOR_FLAG_LEAD_OFF),
        saturated=bool(flags & _VENDOR_FLAG_SATURATED),
        samples=samples,
    )
