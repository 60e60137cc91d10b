"""Device ingress (docs/spec/public-surface.md §Device ingress) and plausibility
(docs/spec/clinical-rules.md §Plausibility).

topic + payload -> Accepted (bound to the configured patient) or Rejected
(with a reason). The patient id never comes from the device; bad payloads are
rejected, never raised.
"""

from __future__ import annotations

import json
import struct
from datetime import datetime, timedelta

import numpy as np
import pytest

from gateway import gatt_codecs as gc
from gateway.ingress import MAX_PAYLOAD_BYTES, DeviceBinding, DeviceRegistry, decode_gatt, decode_message
from gateway.vendor_ecg_timing import MAX_AHEAD, VendorEcgTimeBase
from simulators import gatt_encoding as enc
from stream import plausibility
from stream.models import (
    CHINA_TZ,
    Accepted,
    BloodPressureReading,
    DeviceKind,
    EcgFrame,
    GlucoseReading,
    HeartRateReading,
    Rejected,
    Spo2Reading,
)
from stream.thresholds import Plausibility

CLINIC = "c1"
NOW = datetime(2024, 3, 15, 8, 0, tzinfo=CHINA_TZ)
REGISTRY = DeviceRegistry(
    [
        DeviceBinding("bp-1", "p-0001", DeviceKind.BLOOD_PRESSURE),
        DeviceBinding("glu-1", "p-0001", DeviceKind.GLUCOSE),
        DeviceBinding("ecg-2", "p-0002", DeviceKind.ECG),
        DeviceBinding("spo2-2", "p-0002", DeviceKind.SPO2),
    ]
)
LIMITS = Plausibility()


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def json_topic(device: str) -> str:
    return f"vg/{CLINIC}/device/{device}/reading"


def gatt_topic(device: str, uuid16: str) -> str:
    return f"vg/{CLINIC}/device/{device}/gatt/{uuid16}"


def send(topic: str, payload: bytes | dict, received_at: datetime = NOW) -> Accepted | Rejected:
    if isinstance(payload, dict):
        payload = json.dumps(payload).encode()
    return decode_message(topic, payload, CLINIC, REGISTRY, received_at)


def accepted(result: Accepted | Rejected) -> Accepted:
    assert isinstance(result, Accepted), result
    return result


def rejected(result: Accepted | Rejected, reason: str) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.reason == reason, result
    assert result.detail
    return result


BP_JSON = {
    "kind": "blood_pressure",
    "ts": "2024-03-15T07:58:00+08:00",
    "seq": 17,
    "systolic": 182,
    "diastolic": 112,
    "pulse": 88,
    "unit": "mmHg",
    "status": {"body_movement": False, "irregular_pulse": False, "cuff_loose": False},
}
GLU_JSON = {"kind": "glucose", "ts": "2024-03-15T07:58:00+08:00", "seq": 5, "mmol_l": 2.6, "meal": "fasting"}
ECG_JSON = {
    "kind": "ecg",
    "ts": "2024-03-15T07:59:59+08:00",
    "seq": 1234,
    "fs": 250,
    "samples_uv": [0.0] * 250,
    "lead_off": False,
}
SPO2_JSON = {"kind": "spo2", "ts": "2024-03-15T07:59:00+08:00", "seq": 9, "spo2": 91, "pulse": 70}


# ---------------------------------------------------------------- JSON door


def test_blood_pressure_json_is_accepted_and_bound_to_the_configured_patient():
    acc = accepted(send(json_topic("bp-1"), BP_JSON))
    assert (acc.patient_id, acc.device_id, acc.source, acc.received_at) == ("p-0001", "bp-1", "mqtt_json", NOW)
    r = acc.reading
    assert isinstance(r, BloodPressureReading)
    assert (r.systolic, r.diastolic, r.pulse, r.seq) == (182, 112, 88, 17)
    assert r.ts == datetime(2024, 3, 15, 7, 58, tzinfo=CHINA_TZ)
    assert not r.status.questionable


def test_glucose_json_is_accepted():
    acc = accepted(send(json_topic("glu-1"), GLU_JSON))
    assert acc.patient_id == "p-0001"
    assert isinstance(acc.reading, GlucoseReading)
    assert (acc.reading.mmol_l, acc.reading.meal, acc.reading.seq) == (2.6, "fasting", 5)


def test_ecg_json_frame_is_accepted():
    acc = accepted(send(json_topic("ecg-2"), ECG_JSON))
    assert acc.patient_id == "p-0002"
    assert isinstance(acc.reading, EcgFrame)
    assert (acc.reading.fs, len(acc.reading.samples_uv), acc.reading.lead_off) == (250, 250, False)


def test_spo2_json_is_accepted():
    acc = accepted(send(json_topic("spo2-2"), SPO2_JSON))
    assert acc.patient_id == "p-0002"
    assert isinstance(acc.reading, Spo2Reading) and (acc.reading.spo2, acc.reading.pulse) == (91, 70)


def test_public_reading_carries_patient_device_and_receive_time():
    body = accepted(send(json_topic("bp-1"), BP_JSON)).to_public()
    assert body["patient_id"] == "p-0001" and body["device_id"] == "bp-1"
    assert body["received_at"] == "2024-03-15T08:00:00.000+08:00"
    assert body["ts"].endswith("+08:00") and body["systolic"] == 182 and body["kind"] == "blood_pressure"


def test_naive_device_time_is_read_as_clinic_time():
    acc = accepted(send(json_topic("glu-1"), {**GLU_JSON, "ts": "2024-03-15T07:58:00"}))
    assert acc.reading.ts.utcoffset() == timedelta(hours=8)


# ---------------------------------------------------------------- JSON rejections


def test_unknown_device_is_rejected():
    r = rejected(send(json_topic("bp-999"), BP_JSON), "unknown_device")
    assert r.device_id == "bp-999" and "bp-999" in r.detail


def test_device_of_another_clinic_or_a_non_device_topic_is_rejected():
    rejected(send("vg/other/device/bp-1/reading", BP_JSON), "bad_topic")
    rejected(send(f"vg/{CLINIC}/device/bp-1/whatever", BP_JSON), "bad_topic")


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"", b"\xff\xfe\x00", b"[1, 2, 3]", b'"text"'],
    ids=["broken", "empty", "binary", "array", "string"],
)
def test_malformed_json_is_rejected(payload):
    r = rejected(send(json_topic("bp-1"), payload), "malformed_json")
    assert r.device_id == "bp-1" and r.topic == json_topic("bp-1")


def test_wrong_kind_for_the_device_is_rejected():
    r = rejected(send(json_topic("bp-1"), GLU_JSON), "wrong_kind")
    assert "blood_pressure" in r.detail and "glucose" in r.detail


@pytest.mark.parametrize(
    "payload",
    [
        {k: v for k, v in BP_JSON.items() if k != "diastolic"},  # missing field
        {**BP_JSON, "systolic": "high"},  # wrong type
        {**BP_JSON, "kind": "thermometer"},  # unknown kind
        {k: v for k, v in BP_JSON.items() if k != "kind"},  # no kind
        {**BP_JSON, "unit": "kPa"},  # JSON readings are mmHg
        {**GLU_JSON, "meal": "brunch"},
        {**ECG_JSON, "fs": 10},
        {**ECG_JSON, "samples_uv": []},
        {**SPO2_JSON, "ts": "yesterday"},
        {**SPO2_JSON, "seq": -1},
    ],
    ids=["missing", "type", "unknown-kind", "no-kind", "unit", "meal", "fs", "no-samples", "ts", "seq"],
)
def test_schema_errors_are_rejected_with_the_field(payload):
    device = {"blood_pressure": "bp-1", "glucose": "glu-1", "ecg": "ecg-2", "spo2": "spo2-2"}.get(
        payload.get("kind", ""), "bp-1"
    )
    r = rejected(send(json_topic(device), payload), "invalid_reading")
    assert "problem(s)" in r.detail


def test_device_cannot_choose_its_patient():
    r = rejected(send(json_topic("bp-1"), {**BP_JSON, "patient_id": "p-0002"}), "invalid_reading")
    assert "patient_id" in r.detail


def test_oversize_payload_is_rejected_before_parsing():
    big = json.dumps({**ECG_JSON, "samples_uv": [1.0] * 100_000}).encode()
    assert len(big) > MAX_PAYLOAD_BYTES
    r = rejected(send(json_topic("ecg-2"), big), "too_large")
    assert str(MAX_PAYLOAD_BYTES) in r.detail


def test_a_rejected_message_does_not_affect_the_next_good_one():
    rejected(send(json_topic("bp-1"), b"{oops"), "malformed_json")
    accepted(send(json_topic("bp-1"), BP_JSON))


# ---------------------------------------------------------------- GATT door (docs/spec/gatt.md vectors)


def test_bp_vector_3_decodes_to_the_same_model():
    acc = accepted(send(gatt_topic("bp-1", "2a35"), h("16 B9 00 7D 00 91 00 E8 07 03 0F 07 1E 00 58 00 04 00")))
    assert acc.source == "mqtt_gatt" and acc.patient_id == "p-0001"
    r = acc.reading
    assert isinstance(r, BloodPressureReading)
    assert (r.systolic, r.diastolic, r.pulse) == (185, 125, 88)
    assert r.ts == datetime(2024, 3, 15, 7, 30, tzinfo=CHINA_TZ)
    assert r.status.irregular_pulse and not r.status.questionable


def test_bp_vector_1_status_flags_and_unknown_year():
    acc = accepted(send(gatt_topic("bp-1", "2a35"), h("1E 8A 00 58 00 78 00 00 00 04 11 14 29 3B 3C 00 01 27 00")))
    r = acc.reading
    assert (r.systolic, r.diastolic, r.pulse, r.user_id) == (138, 88, 60, 1)
    assert r.status.body_movement and r.status.cuff_loose and r.status.irregular_pulse and r.status.improper_position
    assert r.status.questionable
    assert r.ts == NOW  # year unknown: the gateway's receive time stands in


def test_bp_vector_2_kpa_is_converted_to_mmhg():
    r = accepted(send(gatt_topic("bp-1", "2a35"), h("15 BD F0 0B 00 9F F0 3C 00 12 00"))).reading
    assert r.systolic == pytest.approx(141.8, abs=0.05) and r.diastolic == pytest.approx(82.5, abs=0.05)
    assert r.unit == "mmHg" and r.status.cuff_loose


def test_uppercase_uuid_in_topic_is_accepted():
    accepted(send(gatt_topic("bp-1", "2A35"), h("16 B9 00 7D 00 91 00 E8 07 03 0F 07 1E 00 58 00 04 00")))


def test_glucose_vector_1_mg_dl_to_mmol_l():
    r = accepted(send(gatt_topic("glu-1", "2a18"), h("02 2A 00 E8 07 03 0F 07 1E 00 5A B0 11"))).reading
    assert isinstance(r, GlucoseReading)
    assert (r.seq, r.mmol_l, r.range) == (42, 5.0, None)
    assert r.ts == datetime(2024, 3, 15, 7, 30, tzinfo=CHINA_TZ)


def test_glucose_vector_2_time_offset_and_battery_flag():
    r = accepted(
        send(
            gatt_topic("glu-1", "2a18"),
            h("1F 00 01 E8 07 03 0F 16 05 00 3C 00 1C C0 12 01 00"),
            received_at=datetime(2024, 3, 15, 23, 10, tzinfo=CHINA_TZ),
        )
    ).reading
    assert (r.seq, r.mmol_l) == (256, 2.8)
    assert r.ts == datetime(2024, 3, 15, 23, 5, tzinfo=CHINA_TZ)  # 22:05 + 60 min
    assert "battery_low" in r.flags


def test_glucose_vector_3_hi_is_a_range_not_a_number():
    r = accepted(send(gatt_topic("glu-1", "2a18"), h("0A 07 00 E8 07 03 0F 0C 00 00 FE 07 11 20 00"))).reading
    assert (r.seq, r.mmol_l, r.range) == (7, None, "hi")


@pytest.mark.parametrize(
    "vector, bpm, contact, rr",
    [
        ("00 55", 85, None, []),
        ("04 FF", 255, False, []),
        ("16 48 A0 03 B4 03", 72, True, [906.25, 925.78125]),
    ],
)
def test_heart_rate_vectors(vector, bpm, contact, rr):
    acc = accepted(send(gatt_topic("ecg-2", "2a37"), h(vector)))
    r = acc.reading
    assert isinstance(r, HeartRateReading)
    assert (r.bpm, r.contact, r.rr_ms, r.ts) == (bpm, contact, rr, NOW)


def test_battery_level():
    r = accepted(send(gatt_topic("bp-1", "2a19"), h("5A"))).reading
    assert r.kind == "battery" and r.percent == 90


# ---------------------------------------------------------------- simulator bytes round-trip


def test_simulated_bp_bytes_match_the_json_reading():
    when = datetime(2024, 3, 15, 7, 58, tzinfo=CHINA_TZ)
    raw = enc.encode_bp_measurement(182, 112, pulse=88, when=when)
    via_gatt = accepted(send(gatt_topic("bp-1", "2a35"), raw)).reading
    via_json = accepted(send(json_topic("bp-1"), BP_JSON)).reading
    for field in ("kind", "ts", "systolic", "diastolic", "pulse", "unit", "status"):
        assert getattr(via_gatt, field) == getattr(via_json, field), field


def test_simulated_bp_flags_survive():
    raw = enc.encode_bp_measurement(190, 120, pulse=90, when=NOW, body_movement=True, cuff_loose=True, user_id=2)
    r = accepted(send(gatt_topic("bp-1", "2a35"), raw)).reading
    assert r.status.body_movement and r.status.cuff_loose and not r.status.irregular_pulse
    assert r.user_id == 2


@pytest.mark.parametrize("mmol", [2.6, 3.9, 5.5, 16.7])
def test_simulated_glucose_bytes_round_trip(mmol):
    raw = enc.encode_glucose_measurement(5, datetime(2024, 3, 15, 7, 58), mmol)
    r = accepted(send(gatt_topic("glu-1", "2a18"), raw)).reading
    assert (r.seq, r.mmol_l, r.range) == (5, mmol, None)
    assert r.ts == datetime(2024, 3, 15, 7, 58, tzinfo=CHINA_TZ)


@pytest.mark.parametrize("mmol", [22.2, 33.3])
def test_simulated_glucose_crisis_values_can_be_encoded(mmol):
    raw = enc.encode_glucose_measurement(6, datetime(2024, 3, 15, 7, 58), mmol)
    r = accepted(send(gatt_topic("glu-1", "2a18"), raw)).reading
    assert r.mmol_l == pytest.approx(mmol, abs=0.05)


@pytest.mark.parametrize("kw, rng", [({"hi": True}, "hi"), ({"lo": True}, "lo")])
def test_simulated_glucose_hi_lo(kw, rng):
    raw = enc.encode_glucose_measurement(8, datetime(2024, 3, 15, 7, 58), None, **kw)
    r = accepted(send(gatt_topic("glu-1", "2a18"), raw)).reading
    assert (r.mmol_l, r.range) == (None, rng)


def test_simulated_heart_rate_round_trip():
    raw = enc.encode_heart_rate(72, rr_ms=[800.0, 1000.0], contact=True)
    r = accepted(send(gatt_topic("ecg-2", "2a37"), raw)).reading
    assert (r.bpm, r.contact) == (72, True)
    assert r.rr_ms == pytest.approx([800.0, 1000.0], abs=1.0)


# ---------------------------------------------------------------- GATT rejections


def sfloat_bp(systolic_word: int, diastolic_word: int = 0x0058) -> bytes:
    """A 2A35 value in mmHg with raw SFLOAT words (no optional fields)."""
    return struct.pack("<BHHH", 0x00, systolic_word, diastolic_word, 0x0078)


@pytest.mark.parametrize("word", [0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801], ids=["NaN", "NRes", "+INF", "-INF", "rsvd"])
def test_special_sfloat_systolic_never_becomes_a_number(word):
    r = rejected(send(gatt_topic("bp-1", "2a35"), sfloat_bp(word)), "special_value")
    assert r.topic == gatt_topic("bp-1", "2a35")


def test_special_value_rejection_names_the_device():
    r = rejected(send(gatt_topic("bp-1", "2a35"), sfloat_bp(0x07FF)), "special_value")
    assert r.device_id == "bp-1"


def test_special_sfloat_diastolic_is_rejected():
    rejected(send(gatt_topic("bp-1", "2a35"), sfloat_bp(0x0078, 0x07FF)), "special_value")


def test_nan_pulse_is_dropped_not_turned_into_a_number():
    raw = struct.pack("<BHHHH", 0x04, 0x0078, 0x0050, 0x0060, 0x07FF)  # pulse present but NaN
    r = accepted(send(gatt_topic("bp-1", "2a35"), raw)).reading
    assert (r.systolic, r.diastolic, r.pulse) == (120, 80, None)


def test_nan_glucose_concentration_is_rejected():
    raw = h("02 2A 00 E8 07 03 0F 07 1E 00 FF 07 11")
    r = rejected(send(gatt_topic("glu-1", "2a18"), raw), "special_value")
    assert "42" in r.detail


def test_control_solution_is_rejected():
    raw = enc.encode_glucose_measurement(9, datetime(2024, 3, 15, 7, 58), 5.5, control_solution=True)
    r = rejected(send(gatt_topic("glu-1", "2a18"), raw), "control_solution")
    assert r.topic == gatt_topic("glu-1", "2a18")


@pytest.mark.parametrize("type_location", ["1A", "41"], ids=["type-10", "location-4"])
def test_control_solution_by_type_or_location(type_location):
    raw = h(f"02 2A 00 E8 07 03 0F 07 1E 00 5A B0 {type_location}")
    rejected(send(gatt_topic("glu-1", "2a18"), raw), "control_solution")


@pytest.mark.parametrize(
    "payload",
    [b"", h("16 B9 00"), h("16 B9 00 7D 00 91 00 E8 07 03 0F 07 1E 00 58 00 04 00 FF")],
    ids=["empty", "truncated", "trailing"],
)
def test_malformed_gatt_is_rejected(payload):
    r = rejected(send(gatt_topic("bp-1", "2a35"), payload), "malformed_gatt")
    assert r.topic == gatt_topic("bp-1", "2a35")


def test_unsupported_characteristic_is_rejected():
    rejected(send(gatt_topic("bp-1", "2a36"), h("00 96 00 FF 07 FF 07")), "unsupported_characteristic")


def test_gatt_of_the_wrong_kind_for_the_device_is_rejected():
    rejected(send(gatt_topic("bp-1", "2a18"), h("02 2A 00 E8 07 03 0F 07 1E 00 5A B0 11")), "wrong_kind")


def test_gatt_from_unknown_device_is_rejected():
    rejected(send(gatt_topic("nobody", "2a35"), h("16 B9 00 7D 00 91 00")), "unknown_device")


# ---------------------------------------------------------------- idempotency (clinical-rules.md §Duplicates)


def test_redelivered_json_message_has_the_same_key():
    first = accepted(send(json_topic("glu-1"), GLU_JSON, received_at=NOW))
    again = accepted(send(json_topic("glu-1"), GLU_JSON, received_at=NOW + timedelta(seconds=30)))
    assert first.idempotency_key == again.idempotency_key


def test_different_seq_has_a_different_key():
    a = accepted(send(json_topic("glu-1"), GLU_JSON))
    b = accepted(send(json_topic("glu-1"), {**GLU_JSON, "seq": 6}))
    assert a.idempotency_key != b.idempotency_key


def test_same_seq_on_another_device_has_a_different_key():
    reg = DeviceRegistry(
        [DeviceBinding("glu-1", "p-1", DeviceKind.GLUCOSE), DeviceBinding("glu-2", "p-1", DeviceKind.GLUCOSE)]
    )
    payload = json.dumps(GLU_JSON).encode()
    a = decode_message(json_topic("glu-1"), payload, CLINIC, reg, NOW)
    b = decode_message(json_topic("glu-2"), payload, CLINIC, reg, NOW)
    assert accepted(a).idempotency_key != accepted(b).idempotency_key


def test_redelivered_gatt_bp_with_device_time_has_the_same_key():
    raw = h("16 B9 00 7D 00 91 00 E8 07 03 0F 07 1E 00 58 00 04 00")
    a = accepted(send(gatt_topic("bp-1", "2a35"), raw, received_at=NOW))
    b = accepted(send(gatt_topic("bp-1", "2a35"), raw, received_at=NOW + timedelta(seconds=5)))
    assert a.idempotency_key == b.idempotency_key


def test_bp_with_different_values_at_the_same_time_has_a_different_key():
    a = accepted(send(json_topic("bp-1"), BP_JSON))
    b = accepted(send(json_topic("bp-1"), {**BP_JSON, "systolic": 150}))
    assert a.idempotency_key != b.idempotency_key


def test_redelivered_gatt_glucose_record_has_the_same_key():
    raw = h("02 2A 00 E8 07 03 0F 07 1E 00 5A B0 11")
    a = accepted(send(gatt_topic("glu-1", "2a18"), raw, received_at=NOW))
    b = accepted(send(gatt_topic("glu-1", "2a18"), raw, received_at=NOW + timedelta(minutes=3)))
    assert a.idempotency_key == b.idempotency_key


def test_redelivered_glucose_record_with_unknown_date_has_the_same_key():
    raw = h("02 2A 00 00 00 00 00 07 1E 00 5A B0 11")  # seq 42, year/month/day unknown
    a = accepted(send(gatt_topic("glu-1", "2a18"), raw, received_at=NOW))
    b = accepted(send(gatt_topic("glu-1", "2a18"), raw, received_at=NOW + timedelta(seconds=20)))
    assert a.idempotency_key == b.idempotency_key


# ---------------------------------------------------------------- plausibility (clinical-rules.md §Plausibility)


def acc_of(reading) -> Accepted:
    return Accepted(reading=reading, patient_id="p-0001", device_id="dev-1", received_at=NOW, idempotency_key="k")


def bp_reading(sys_: float, dia: float, pulse: float | None = 80, ts: datetime = NOW) -> BloodPressureReading:
    return BloodPressureReading(ts=ts, systolic=sys_, diastolic=dia, pulse=pulse)


def check(reading) -> Rejected | None:
    return plausibility.check(acc_of(reading), LIMITS, NOW)


@pytest.mark.parametrize(
    "reading",
    [
        bp_reading(120, 80),
        bp_reading(280, 200),
        bp_reading(50, 20),
        GlucoseReading(ts=NOW, mmol_l=0.6),
        GlucoseReading(ts=NOW, mmol_l=33.3),
        GlucoseReading(ts=NOW, range="lo"),
        Spo2Reading(ts=NOW, spo2=50),
        Spo2Reading(ts=NOW, spo2=100, pulse=60),
        HeartRateReading(ts=NOW, bpm=25),
        HeartRateReading(ts=NOW, bpm=255, contact=False),  # no skin contact: kept as a lead-off signal
        EcgFrame(ts=NOW, fs=250, samples_uv=[0.0] * 250),
    ],
    ids=lambda r: getattr(r, "kind", "?"),
)
def test_plausible_readings_pass(reading):
    assert check(reading) is None


@pytest.mark.parametrize(
    "reading, what",
    [
        (bp_reading(400, 90), "systolic 400"),
        (bp_reading(40, 30), "systolic 40"),
        (bp_reading(120, 210), "diastolic 210"),
        (bp_reading(120, 120), "pulse pressure"),
        (bp_reading(100, 120), "pulse pressure"),
        (bp_reading(125, 120), "pulse pressure"),
        (bp_reading(120, 80, pulse=300), "pulse 300"),
        (GlucoseReading(ts=NOW, mmol_l=0.2), "glucose 0.2"),
        (GlucoseReading(ts=NOW, mmol_l=100.0), "mg/dL"),
        (Spo2Reading(ts=NOW, spo2=40), "SpO2 40"),
        (Spo2Reading(ts=NOW, spo2=101), "SpO2 101"),
        (HeartRateReading(ts=NOW, bpm=300, contact=True), "heart rate 300"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_implausible_values_are_rejected_with_the_value(reading, what):
    r = check(reading)
    assert r is not None and r.reason == "implausible_value"
    assert what in r.detail and r.device_id == "dev-1"


def test_glucose_with_neither_value_nor_range_is_invalid():
    r = check(GlucoseReading(ts=NOW))
    assert r is not None and r.reason == "invalid_reading"


@pytest.mark.parametrize(
    "reading",
    [
        bp_reading(float("nan"), 80),
        bp_reading(120, 80, pulse=float("nan")),
        GlucoseReading(ts=NOW, mmol_l=float("nan")),
        Spo2Reading(ts=NOW, spo2=float("inf")),
        EcgFrame(ts=NOW, fs=250, samples_uv=[0.0] * 249 + [float("nan")]),
        HeartRateReading(ts=NOW, bpm=float("nan"), contact=False),
        HeartRateReading(ts=NOW, bpm=72, contact=True, rr_ms=[800.0, float("inf")]),
    ],
    ids=["bp-nan", "pulse-nan", "glucose-nan", "spo2-inf", "ecg-nan", "hr-nan-no-contact", "hr-rr-inf"],
)
def test_non_finite_numbers_never_pass(reading):
    # a strap without skin contact keeps its junk (finite) rate as a lead-off signal, never a NaN:
    # a stored NaN heart rate broke that patient's FHIR export (issue 16)
    r = check(reading)
    assert r is not None and r.reason in ("implausible_value", "invalid_ecg_frame"), r


@pytest.mark.parametrize(
    "payload",
    [
        b'{"kind": "spo2", "ts": "2024-03-15T07:59:00+08:00", "spo2": NaN}',
        b'{"kind": "spo2", "ts": "2024-03-15T07:59:00+08:00", "spo2": 95, "pulse": Infinity}',
    ],
)
def test_json_nan_from_a_device_never_reaches_the_rules(payload):
    # Python's json accepts NaN/Infinity literals: ingress or plausibility must stop them.
    result = send(json_topic("spo2-2"), payload)
    assert isinstance(result, Rejected) or check(result.reading) is not None


def test_future_timestamp_more_than_5_min_ahead_is_rejected():
    r = check(bp_reading(120, 80, ts=NOW + timedelta(minutes=5, seconds=1)))
    assert r is not None and r.reason == "future_timestamp"


def test_timestamp_up_to_5_min_ahead_is_tolerated():
    assert check(bp_reading(120, 80, ts=NOW + timedelta(minutes=5))) is None
    assert check(GlucoseReading(ts=NOW + timedelta(minutes=4), mmol_l=5.0)) is None


def test_old_timestamps_are_not_implausible():
    # Back-filled readings are judged by the rules (follow-up), not thrown away.
    assert check(GlucoseReading(ts=NOW - timedelta(days=3), mmol_l=5.0)) is None


def test_ecg_frame_length_must_be_0_2_to_10_s():
    r = check(EcgFrame(ts=NOW, fs=250, samples_uv=[0.0] * 10))
    assert r is not None and r.reason == "invalid_ecg_frame"


# ---------------------------------------------------------------- vendor ECG frames over MQTT (docs/vendor_ecg.md)

VENDOR_EXAMPLE_1 = h("01 00 2A 00 FA 00 7D 00 04 00 00 00 64 00 9C FF 20 03")  # seq 42, 250 Hz, 1.25 µV/LSB
VENDOR_EXAMPLE_2 = h("01 03 2B 00 FA 00 7D 00 02 00 FF 7F 00 80")  # seq 43, lead-off + saturated


def vendor_frame(seq: int, samples: list[int], fs: int = 250, lead_off: bool = False) -> bytes:
    return gc.encode_vendor_ecg_frame(seq, fs, 1.0, lead_off, np.array(samples))


def test_vendor_doc_example_1_becomes_an_ecg_reading_stamped_at_receive_time():
    acc = accepted(send(gatt_topic("ecg-2", "5a7e0003"), VENDOR_EXAMPLE_1))
    assert (acc.patient_id, acc.device_id, acc.source, acc.received_at) == ("p-0002", "ecg-2", "mqtt_gatt", NOW)
    r = acc.reading
    assert isinstance(r, EcgFrame)
    assert (r.seq, r.fs, r.lead_off) == (42, 250, False)
    assert r.samples_uv == [0.0, 125.0, -125.0, 1000.0]  # counts x 1.25 µV
    assert r.ts == NOW - timedelta(milliseconds=16)  # 4 samples at 250 Hz end when the frame arrived
    # The same through the pure decoder the BLE proxy door shares
    assert decode_gatt("5a7e0003", VENDOR_EXAMPLE_1, "ecg-2", NOW) == r


def test_vendor_doc_example_2_carries_lead_off():
    r = accepted(send(gatt_topic("ecg-2", "5a7e0003"), VENDOR_EXAMPLE_2)).reading
    assert isinstance(r, EcgFrame) and r.lead_off and r.seq == 43
    assert r.samples_uv == [40958.75, -40960.0]


@pytest.mark.parametrize("level", ["5a7e0003", "5A7E0003", gc.VENDOR_ECG_DATA_UUID, gc.VENDOR_ECG_DATA_UUID.upper()])
def test_vendor_frame_topic_takes_the_slot_or_the_whole_uuid(level):
    r = accepted(send(gatt_topic("ecg-2", level), VENDOR_EXAMPLE_1)).reading
    assert isinstance(r, EcgFrame) and r.seq == 42


def test_a_binary_frame_reads_as_the_json_frame_with_the_same_samples():
    samples = [int(v) for v in np.round(800 * np.sin(np.arange(250) / 8))]
    via_json = accepted(send(json_topic("ecg-2"), {**ECG_JSON, "seq": 7, "samples_uv": samples})).reading
    via_gatt = accepted(send(gatt_topic("ecg-2", "5a7e0003"), vendor_frame(7, samples))).reading
    for field in ("kind", "seq", "fs", "samples_uv", "lead_off"):
        assert getattr(via_gatt, field) == getattr(via_json, field), field
    assert check(via_gatt) is None  # a 1-s frame passes plausibility as the JSON one does


@pytest.mark.parametrize(
    "payload,why",
    [
        (b"", "need at least 10"),
        (VENDOR_EXAMPLE_1[:9], "need at least 10"),
        (VENDOR_EXAMPLE_1[:-1], "header announces 4 samples"),
        (VENDOR_EXAMPLE_1 + b"\x00\x00", "header announces 4 samples"),
        (b"\x02" + VENDOR_EXAMPLE_1[1:], "format version 2"),
        (VENDOR_EXAMPLE_1[:1] + b"\x04" + VENDOR_EXAMPLE_1[2:], "reserved flag bits"),
        (VENDOR_EXAMPLE_1[:4] + b"\x10\x00" + VENDOR_EXAMPLE_1[6:], "sample rate 16 Hz"),
        (VENDOR_EXAMPLE_1[:6] + b"\x00\x00" + VENDOR_EXAMPLE_1[8:], "scale 0"),
    ],
    ids=["empty", "short-header", "truncated", "trailing", "version", "reserved-flag", "fs", "scale"],
)
def test_malformed_vendor_frame_is_rejected_with_the_reason(payload, why):
    r = rejected(send(gatt_topic("ecg-2", "5a7e0003"), payload), "malformed_gatt")
    assert why in r.detail and r.detail.startswith("vendor ecg:")
    assert r.topic == gatt_topic("ecg-2", "5a7e0003") and r.device_id == "ecg-2"


def test_vendor_frame_from_a_device_that_is_not_an_ecg_patch_is_rejected():
    rejected(send(gatt_topic("bp-1", "5a7e0003"), VENDOR_EXAMPLE_1), "wrong_kind")
    rejected(send(gatt_topic("nobody", "5a7e0003"), VENDOR_EXAMPLE_1), "unknown_device")


def test_unsupported_characteristic_lists_the_vendor_frame():
    r = rejected(send(gatt_topic("ecg-2", "5a7e0002"), VENDOR_EXAMPLE_1), "unsupported_characteristic")
    assert "5a7e0003" in r.detail


def _stream(frames: list[tuple[int, float]], tb: VendorEcgTimeBase, samples: int = 250) -> list[Accepted]:
    """(wire seq, arrival in s after NOW) -> what the gateway accepts, through one time base."""
    return [
        accepted(
            decode_message(
                gatt_topic("ecg-2", "5a7e0003"),
                vendor_frame(seq, [seq % 100] * samples),
                CLINIC,
                REGISTRY,
                NOW + timedelta(seconds=at),
                tb,
            )
        )
        for seq, at in frames
    ]


def test_consecutive_frames_are_counted_on_from_the_first_arrival_not_stamped_with_delivery_jitter():
    tb = VendorEcgTimeBase()
    got = _stream([(10, 0.0), (11, 1.3), (12, 1.9), (13, 3.05)], tb)
    assert [a.reading.ts for a in got] == [NOW - timedelta(seconds=1) + timedelta(seconds=k) for k in range(4)]
    assert [a.reading.seq for a in got] == [10, 11, 12, 13] and tb.rebased == 0


def test_a_seq_gap_starts_a_new_time_base_at_the_arrival():
    tb = VendorEcgTimeBase()
    got = _stream([(10, 0.0), (11, 1.0), (14, 4.2), (15, 5.2)], tb)
    assert got[2].reading.ts == NOW + timedelta(seconds=3.2)  # arrival minus the frame's 1 s
    assert got[3].reading.ts == got[2].reading.ts + timedelta(seconds=1)
    assert [a.reading.seq for a in got] == [10, 11, 14, 15] and tb.rebased == 1


def test_seq_is_unwrapped_at_65535():
    got = _stream([(65534, 0.0), (65535, 1.0), (0, 2.0), (1, 3.0)], VendorEcgTimeBase())
    assert [a.reading.seq for a in got] == [65534, 65535, 65536, 65537]
    assert got[3].reading.ts - got[0].reading.ts == timedelta(seconds=3)


def test_a_redelivered_frame_gets_its_first_time_and_key_so_the_store_drops_it():
    tb = VendorEcgTimeBase()
    first = _stream([(10, 0.0), (11, 1.0), (12, 2.0)], tb)
    again = _stream([(11, 30.0), (12, 30.01)], tb)  # an MQTT reconnect resends what was not acknowledged
    assert [a.idempotency_key for a in again] == [a.idempotency_key for a in first[1:]]
    nxt = _stream([(13, 31.0)], tb)[0]  # and the stream goes on where it was
    assert nxt.reading.ts == first[2].reading.ts + timedelta(seconds=1) and nxt.reading.seq == 13


def test_after_a_restart_the_time_base_is_restored_from_the_store_so_a_redelivered_frame_keeps_its_key(tmp_path):
    """The first gateway stores frames 10-12 and dies before acknowledging 12; the second is given the
    store's last frames, so 12 comes back with its time (and key), and 13 goes on from there."""
    from stream.store import FILE_NAME, ReadingQueries, ReadingStore

    first = _stream([(10, 0.0), (11, 1.0), (12, 2.0)], VendorEcgTimeBase())
    store = ReadingStore(tmp_path)
    for acc in first:
        store.add(acc)
    store.close()
    queries = ReadingQueries(tmp_path / FILE_NAME)
    tb = VendorEcgTimeBase(history=lambda dev: queries.ecg_frame_times("p-0002", dev, 64))
    again, nxt = _stream([(12, 20.0), (13, 20.1)], tb)
    queries.close()
    assert again.idempotency_key == first[2].idempotency_key and again.reading.ts == first[2].reading.ts
    assert nxt.reading.ts == first[2].reading.ts + timedelta(seconds=1) and nxt.reading.seq == 13
    assert tb.rebased == 0


def test_frames_sent_faster_than_real_time_are_re_based_before_they_run_far_into_the_future():
    tb = VendorEcgTimeBase()
    got = _stream([(k, 0.05 * k) for k in range(30)], tb)  # 30 s of frames in 1.5 s (a drained backlog)
    ahead = [a.reading.ts + timedelta(seconds=1) - a.received_at for a in got]
    assert max(ahead) <= MAX_AHEAD and tb.rebased >= 2
    assert [a.reading.seq for a in got] == list(range(30))


def test_a_frame_long_after_the_counted_time_is_re_based():
    tb = VendorEcgTimeBase()
    got = _stream([(10, 0.0), (11, 1.0), (12, 300.0)], tb)  # seq goes on, but the patch paused 5 minutes
    assert got[2].reading.ts == NOW + timedelta(seconds=299) and tb.rebased == 1
