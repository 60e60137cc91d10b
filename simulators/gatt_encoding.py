"""Byte encoders a simulated device uses to speak standard GATT (the gateway only decodes).

Layouts in docs/spec/gatt.md; the gateway's decoders in `gateway/gatt_codecs.py`
read these bytes back in the tests.
"""

from __future__ import annotations

import struct
from datetime import datetime


def encode_sfloat(value: float, exponent: int = 0) -> bytes:
    """IEEE-11073 16-bit SFLOAT: 4-bit exponent, 12-bit mantissa, two's complement."""
    mantissa = round(value / (10**exponent))
    if not -2048 < mantissa < 2046:
        raise ValueError(f"{value} does not fit an SFLOAT with exponent {exponent}")
    return struct.pack("<H", ((exponent & 0xF) << 12) | (mantissa & 0x0FFF))


def encode_date_time(dt: datetime) -> bytes:
    return struct.pack("<HBBBBB", dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)


def encode_bp_measurement(
    systolic: float,
    diastolic: float,
    *,
    pulse: float | None = None,
    when: datetime | None = None,
    body_movement: bool = False,
    cuff_loose: bool = False,
    irregular_pulse: bool = False,
    user_id: int | None = None,
) -> bytes:
    """0x2A35 in mmHg: flags, sys/dia/MAP, [time], [pulse], [user], [status]."""
    flags = 0
    mean = round(diastolic + (systolic - diastolic) / 3)
    body = encode_sfloat(systolic) + encode_sfloat(diastolic) + encode_sfloat(mean)
    if when is not None:
        flags |= 0x02
        body += encode_date_time(when)
    if pulse is not None:
        flags |= 0x04
        body += encode_sfloat(pulse)
    if user_id is not None:
        flags |= 0x08
        body += bytes([user_id])
    status = (1 if body_movement else 0) | (2 if cuff_loose else 0) | (4 if irregular_pulse else 0)
    flags |= 0x10
    body += struct.pack("<H", status)
    return bytes([flags]) + body


def encode_glucose_measurement(
    seq: int,
    when: datetime,
    mmol_l: float | None,
    *,
    hi: bool = False,
    lo: bool = False,
    control_solution: bool = False,
    battery_low: bool = False,
) -> bytes:
    """0x2A18 in mol/L (flags b1|b2), capillary whole blood from a finger; HI/LO as status b5/b6 with ±INF."""
    flags = 0x02 | 0x04 | 0x08
    body = struct.pack("<H", seq) + encode_date_time(when)
    if hi:
        conc = struct.pack("<H", 0x07FE)
    elif lo:
        conc = struct.pack("<H", 0x0802)
    else:
        assert mmol_l is not None
        # mol/L; 0.01 mmol/L resolution where the 12-bit mantissa allows it, 0.1 above ~20 mmol/L.
        exponent = -5 if mmol_l < 20.0 else -4
        conc = encode_sfloat(mmol_l / 1000.0, exponent=exponent)
    kind_loc = 0x4A if control_solution else 0x11
    status = (1 if battery_low else 0) | (1 << 5 if hi else 0) | (1 << 6 if lo else 0)
    body += conc + bytes([kind_loc]) + struct.pack("<H", status)
    return bytes([flags]) + body


def encode_heart_rate(bpm: int, rr_ms: list[float] | None = None, contact: bool | None = True) -> bytes:
    flags = 0
    if contact is not None:
        flags |= 0x06 if contact else 0x04
    if bpm > 255:
        flags |= 0x01
        body = struct.pack("<H", bpm)
    else:
        body = bytes([bpm])
    if rr_ms:
        flags |= 0x10
        body += b"".join(struct.pack("<H", round(rr * 1024 / 1000)) for rr in rr_ms)
    return bytes([flags]) + body
