"""Device ingress: MQTT topic + payload -> an accepted reading or a reason for rejection.

Pure: no broker, no clock (the caller passes `received_at`). Every door in
(MQTT JSON, raw GATT over MQTT, BLE through bleak) ends in `Accepted`, so the
stream core never knows which one a reading came through.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import TypeAdapter, ValidationError

from gateway import gatt_codecs as gc
from gateway.vendor_ecg_timing import VendorEcgTimeBase
from stream.models import (
    CHINA_TZ,
    KINDS_FOR_DEVICE,
    Accepted,
    AnyReading,
    BatteryReading,
    BloodPressureReading,
    BpStatusFlags,
    DeviceKind,
    DeviceReading,
    EcgFrame,
    EcgStripReading,
    GlucoseReading,
    HeartRateReading,
    Rejected,
    ScreenedStrip,
)

_READING = TypeAdapter(DeviceReading)
MAX_PAYLOAD_BYTES = 256 * 1024  # a 1-s 1000 Hz ECG frame as JSON is ~10 kB


@dataclass(frozen=True)
class DeviceBinding:
    device_id: str
    patient_id: str
    kind: DeviceKind


class DeviceRegistry:
    """device id -> patient; the patient id never comes from the device."""

    def __init__(self, bindings: list[DeviceBinding]) -> None:
        self._by_id = {b.device_id: b for b in bindings}

    def get(self, device_id: str) -> DeviceBinding | None:
        return self._by_id.get(device_id)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)


def idempotency_key(device_id: str, reading: AnyReading) -> str:
    """Same measurement delivered twice (QoS 1 redelivery, RACP resend) -> same key.

    Glucose/ECG/SpO2 carry a device sequence number; BP keys on device time and
    values (docs/spec/clinical-rules.md §Duplicates), since cuffs have no sequence number;
    a screening strip keys on its `strip_id`.
    """
    if isinstance(reading, BloodPressureReading):
        parts = [
            reading.ts.isoformat(),
            reading.systolic,
            reading.diastolic,
            reading.pulse,
            reading.user_id,
            reading.seq,
        ]
    elif isinstance(reading, GlucoseReading) and reading.seq is not None and "time_unknown" in reading.flags:
        # The meter's clock is unset, so ts is our receive time: only the record number identifies it.
        parts = [reading.seq]
    elif isinstance(reading, (EcgStripReading, ScreenedStrip)):
        parts = [reading.strip_id]  # the device's id of the strip: resent (a retry after no answer) = the same strip
    else:
        parts = [reading.ts.isoformat(), reading.seq]
    raw = "|".join([device_id, reading.kind, *map(str, parts)])
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


def _reject(reason: str, detail: str, device_id: str | None, topic: str | None) -> Rejected:
    return Rejected(reason=reason, detail=detail, device_id=device_id, topic=topic)


def parse_topic(topic: str, clinic: str) -> tuple[str, str, str | None] | None:
    """`vg/{clinic}/device/{id}/reading` -> (id, 'reading', None); `.../gatt/2a35` -> (id, 'gatt', '2a35')."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != "vg" or parts[1] != clinic or parts[2] != "device":
        return None
    if len(parts) == 5 and parts[4] == "reading":
        return parts[3], "reading", None
    if len(parts) == 6 and parts[4] == "gatt":
        return parts[3], "gatt", parts[5].lower()
    return None


def decode_message(
    topic: str,
    payload: bytes,
    clinic: str,
    registry: DeviceRegistry,
    received_at: datetime,
    ecg_time: VendorEcgTimeBase | None = None,
) -> Accepted | Rejected:
    """`ecg_time`: the caller's keeper of vendor ECG frames' time base (the only state here; without one
    each frame is stamped on its own, see `decode_gatt`)."""
    parsed = parse_topic(topic, clinic)
    if parsed is None:
        return _reject("bad_topic", f"topic {topic!r} is not a device topic of clinic {clinic!r}", None, topic)
    device_id, door, uuid = parsed
    binding = registry.get(device_id)
    if binding is None:
        return _reject(
            "unknown_device",
            f"device {device_id!r} is not in the config; add it under a patient's devices",
            device_id,
            topic,
        )
    if len(payload) > MAX_PAYLOAD_BYTES:
        return _reject("too_large", f"{len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}", device_id, topic)
    if door == "reading":
        result = _decode_json(payload, device_id, topic)
        source = "mqtt_json"
    else:
        result = decode_gatt(uuid or "", payload, device_id, received_at)
        if isinstance(result, Rejected):
            result = result.model_copy(update={"topic": topic})
        elif ecg_time is not None and isinstance(result, EcgFrame) and "ecg" in KINDS_FOR_DEVICE[binding.kind]:
            result = ecg_time.place(device_id, result, received_at)  # before bind: the key is made of ts and seq
        source = "mqtt_gatt"
    if isinstance(result, Rejected):
        return result
    return bind(result, binding, received_at, source, topic)


def bind(
    reading: AnyReading, binding: DeviceBinding, received_at: datetime, source: str, topic: str | None = None
) -> Accepted | Rejected:
    """Check the reading fits the configured device kind and attach the patient."""
    if reading.kind not in KINDS_FOR_DEVICE[binding.kind]:
        return _reject(
            "wrong_kind",
            f"device {binding.device_id} is configured as {binding.kind.value} but sent a {reading.kind} reading",
            binding.device_id,
            topic,
        )
    return Accepted(
        reading=reading,
        patient_id=binding.patient_id,
        device_id=binding.device_id,
        received_at=received_at,
        source=source,
        idempotency_key=idempotency_key(binding.device_id, reading),
    )


def _decode_json(payload: bytes, device_id: str, topic: str) -> AnyReading | Rejected:
    # Parse and validate in one pass (pydantic-core reads the bytes itself, a few µs a message
    # less). Whatever it does not take goes the long way below, which decides the rejection and
    # its detail exactly as before; tests/unit/gateway/test_ingress_fast_path.py checks both ways agree.
    try:
        return _READING.validate_json(payload)
    except ValueError:  # ValidationError, and anything else it could not read
        pass
    return _decode_json_slow(payload, device_id, topic)


def _decode_json_slow(payload: bytes, device_id: str, topic: str) -> AnyReading | Rejected:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        return _reject("malformed_json", f"not JSON: {exc}", device_id, topic)
    except RecursionError:  # found by tests/unit/gateway/test_fuzz_ingress.py: "[[[[..." 100,000 deep
        return _reject("malformed_json", "JSON nested too deeply to be a reading", device_id, topic)
    if not isinstance(body, dict):
        return _reject("malformed_json", "the payload must be a JSON object", device_id, topic)
    try:
        return _READING.validate_python(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(payload)"
        return _reject("invalid_reading", f"{where}: {first['msg']} ({exc.error_count()} problem(s))", device_id, topic)


# ---------------------------------------------------------------- GATT


def _num(v: object) -> float | None:
    """A decoded IEEE-11073 value as a number; special values (NaN, NRes, INF) are not numbers."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _device_time(dt7: gc.DateTime7 | None, received_at: datetime) -> datetime:
    if dt7 is None:
        return received_at
    value = dt7.to_datetime(CHINA_TZ)
    return value if value is not None else received_at  # year/month/day unknown -> receive time


# The vendor ECG data characteristic (docs/vendor_ecg.md): its slot as a topic level, or the whole UUID.
VENDOR_ECG_TOPIC_UUIDS = frozenset({gc.VENDOR_ECG_DATA_UUID[:8], gc.VENDOR_ECG_DATA_UUID})


def decode_gatt(uuid: str, payload: bytes, device_id: str, received_at: datetime) -> AnyReading | Rejected:
    """Raw characteristic bytes (as a BLE proxy or bleak saw them) -> reading."""
    try:
        if uuid in VENDOR_ECG_TOPIC_UUIDS:  # first: the bulk of what comes through this door
            return _from_vendor_ecg(gc.decode_vendor_ecg_frame(payload), received_at)
        if uuid == "2a35":
            return _from_bp(gc.decode_bp_measurement(bytes(payload)), received_at, device_id)
        if uuid == "2a18":
            return _from_glucose(gc.decode_glucose_measurement(bytes(payload)), received_at, device_id)
        if uuid == "2a37":
            hr = gc.decode_heart_rate(bytes(payload))
            return HeartRateReading(ts=received_at, bpm=hr.bpm, rr_ms=list(hr.rr_ms), contact=hr.sensor_contact)
        if uuid == "2a19":
            return BatteryReading(ts=received_at, percent=gc.decode_battery_level(bytes(payload)))
    except gc.GattDecodeError as exc:
        return _reject("malformed_gatt", str(exc), device_id, None)
    except (ValidationError, ValueError) as exc:
        return _reject("invalid_reading", f"{uuid}: {exc}", device_id, None)
    return _reject(
        "unsupported_characteristic",
        f"characteristic {uuid!r} is not decoded by the gateway (supported: 2a35, 2a18, 2a37, 2a19, 5a7e0003)",
        device_id,
        None,
    )


def _from_vendor_ecg(f: gc.VendorEcgFrame, received_at: datetime) -> EcgFrame:
    """One vendor frame -> one `ecg` reading, as the BLE path converts it (`VendorEcgProfile`): µV =
    counts x scale, lead-off from b0. The frame has no time: its first sample is stamped at receive time
    minus its duration, and `seq` is the wire's uint16 (`VendorEcgTimeBase` counts on from there).

    Not joined into 1-s frames as over BLE: one MQTT message is one stored reading, acknowledged after
    its commit, so a patch sends frames of 0.2 s or more (shorter ones fail plausibility,
    `invalid_ecg_frame`). The saturated bit (b1) is not carried, as over BLE: the analyser's own
    quality checks judge clipping."""
    n = len(f.samples)
    # model_construct: the codec has checked what the model would (fs 125-1000 Hz, 1-251 samples),
    # and validating 250 floats again is a good part of what this door saves over JSON.
    return EcgFrame.model_construct(
        ts=received_at - timedelta(seconds=n / f.fs),
        seq=f.seq,
        fs=float(f.fs),
        samples_uv=f.samples_uv().tolist(),
        lead_off=f.lead_off,
    )


def _from_bp(m: gc.BpMeasurement, received_at: datetime, device_id: str) -> BloodPressureReading | Rejected:
    sys_, dia = _num(m.systolic_mmhg), _num(m.diastolic_mmhg)
    if sys_ is None or dia is None:
        return _reject(
            "special_value",
            f"systolic/diastolic is {m.systolic_mmhg}/{m.diastolic_mmhg}, not a measurement",
            device_id,
            None,
        )
    st = m.status
    flags = BpStatusFlags(
        body_movement=bool(st and st.body_movement),
        irregular_pulse=bool(st and st.irregular_pulse),
        cuff_loose=bool(st and st.cuff_loose),
        improper_position=bool(st and st.improper_position),
    )
    return BloodPressureReading(
        ts=_device_time(m.device_time, received_at),
        systolic=round(sys_, 1),
        diastolic=round(dia, 1),
        pulse=_num(m.pulse_bpm) if m.pulse_bpm is not None else None,
        status=flags,
        user_id=m.user_id,
    )


def _from_glucose(m: gc.GlucoseMeasurement, received_at: datetime, device_id: str) -> GlucoseReading | Rejected:
    if m.is_control_solution:
        return _reject(
            "control_solution", f"record {m.seq} is a control-solution test, not the patient", device_id, None
        )
    base = _device_time(m.base_time, received_at)
    ts = base
    if m.time_offset_min and m.base_time.to_datetime(CHINA_TZ) is not None:
        from datetime import timedelta

        ts = base + timedelta(minutes=m.time_offset_min)
    value = _num(m.concentration_mmol_l)
    rng = "hi" if m.is_hi else "lo" if m.is_lo else None
    if value is None and rng is None:
        return _reject(
            "special_value",
            f"record {m.seq}: concentration is {m.concentration_mmol_l}, not a measurement",
            device_id,
            None,
        )
    flags = list(m.quality_flags)
    if m.base_time.to_datetime(CHINA_TZ) is None:
        flags.append("time_unknown")
    if m.time_fault:
        flags.append("time_fault")
    if m.battery_low:
        flags.append("battery_low")
    return GlucoseReading(
        ts=ts,
        seq=m.seq,
        mmol_l=None if rng is not None and value is None else (round(value, 2) if value is not None else None),
        range=rng,
        flags=flags,
    )
