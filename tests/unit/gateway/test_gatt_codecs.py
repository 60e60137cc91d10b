"""GATT codecs against the vectors in docs/spec/gatt.md and docs/vendor_ecg.md.

Every vector is its own test so a failure names the byte string that broke.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import gatt_codecs as gc
from gateway.gatt_codecs import (
    DateTime7,
    GattDecodeError,
    Special,
)
from tests.support.paths import REPO

CST = timezone(timedelta(hours=8))


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# ---------------------------------------------------------------------------
# docs/spec/gatt.md §UUIDs and bleak
# ---------------------------------------------------------------------------


def test_uuid16_expands_sig_short_uuid():
    assert gc.uuid16(0x2A35) == "00002a35-0000-1000-8000-00805f9b34fb"


def test_uuid16_rejects_values_over_16_bits():
    with pytest.raises(ValueError):
        gc.uuid16(0x10000)


# ---------------------------------------------------------------------------
# docs/spec/gatt.md §SFLOAT and FLOAT
# ---------------------------------------------------------------------------


def test_sfloat_78_00_is_120():
    assert gc.read_sfloat(h("78 00"), 0) == 120


def test_sfloat_6e_f1_is_36_6():
    assert gc.read_sfloat(h("6E F1"), 0) == 36.6


def test_sfloat_64_b0_is_0_001():
    assert gc.read_sfloat(h("64 B0"), 0) == 0.001


def test_sfloat_37_c0_is_0_0055():
    assert gc.read_sfloat(h("37 C0"), 0) == 0.0055


def test_sfloat_ff_0f_is_minus_1():
    assert gc.read_sfloat(h("FF 0F"), 0) == -1


def test_sfloat_2e_0b_is_minus_1234():
    assert gc.read_sfloat(h("2E 0B"), 0) == -1234


def test_sfloat_c8_e0_is_2():
    assert gc.read_sfloat(h("C8 E0"), 0) == 2.0


def test_float_14_00_00_ff_is_2():
    assert gc.read_float(h("14 00 00 FF"), 0) == 2.0


def test_float_2e_fb_ff_00_is_minus_1234():
    assert gc.read_float(h("2E FB FF 00"), 0) == -1234


def test_float_6e_01_00_ff_is_36_6():
    assert gc.read_float(h("6E 01 00 FF"), 0) == 36.6


@pytest.mark.parametrize(
    ("wire", "special"),
    [
        ("FF 07", Special.NAN),
        ("00 08", Special.NRES),
        ("FE 07", Special.POS_INF),
        ("02 08", Special.NEG_INF),
        ("01 08", Special.RESERVED),
    ],
)
def test_sfloat_special_values(wire, special):
    assert gc.read_sfloat(h(wire), 0) is special


@pytest.mark.parametrize(
    ("wire", "special"),
    [
        ("FF FF 7F 00", Special.NAN),
        ("00 00 80 00", Special.NRES),
        ("FE FF 7F 00", Special.POS_INF),
        ("02 00 80 00", Special.NEG_INF),
        ("01 00 80 00", Special.RESERVED),
    ],
)
def test_float_special_values(wire, special):
    assert gc.read_float(h(wire), 0) is special


def test_sfloat_specials_only_match_with_exponent_zero():
    # 0xF7FF has the NaN mantissa but exponent -1: an ordinary number (docs/spec/gatt.md §SFLOAT and FLOAT).
    assert gc.decode_sfloat(0xF7FF) == 204.7
    assert gc.decode_sfloat(0x1800) == -20480


def test_every_sfloat_word_is_a_finite_number_or_special():
    specials = {0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801}
    for raw in range(0x10000):
        value = gc.decode_sfloat(raw)
        if raw in specials:
            assert isinstance(value, Special)
        else:
            assert isinstance(value, float) and math.isfinite(value), hex(raw)


@given(st.integers(0, 0xFFFFFFFF))
@settings(max_examples=300)
def test_every_float_word_is_a_finite_number_or_special(raw):
    value = gc.decode_float(raw)
    assert isinstance(value, Special) or (isinstance(value, float) and math.isfinite(value))


def test_read_sfloat_reads_at_offset():
    assert gc.read_sfloat(h("00 6E F1"), 1) == 36.6


def test_read_sfloat_short_raises():
    with pytest.raises(GattDecodeError, match="sfloat"):
        gc.read_sfloat(h("78"), 0)


def test_read_float_short_raises():
    with pytest.raises(GattDecodeError, match="float"):
        gc.read_float(h("14 00 00 FF"), 1)


def test_decode_sfloat_rejects_wider_word():
    with pytest.raises(GattDecodeError):
        gc.decode_sfloat(0x10000)


# ---------------------------------------------------------------------------
# docs/spec/gatt.md §Time and battery
# ---------------------------------------------------------------------------


def test_date_time_vector():
    assert gc.decode_date_time(h("E8 07 03 0F 07 1E 00")) == DateTime7(2024, 3, 15, 7, 30, 0)


def test_date_time_to_datetime_attaches_zone():
    dt = gc.decode_date_time(h("E8 07 03 0F 07 1E 00")).to_datetime(CST)
    assert dt == datetime(2024, 3, 15, 7, 30, 0, tzinfo=CST)
    assert dt.isoformat() == "2024-03-15T07:30:00+08:00"


def test_date_time_unknown_year_has_no_datetime():
    value = gc.decode_date_time(h("00 00 04 11 14 29 3B"))
    assert value == DateTime7(None, 4, 17, 20, 41, 59)
    assert value.to_datetime(CST) is None


def test_date_time_at_offset():
    assert gc.decode_date_time(h("FF E8 07 03 0F 07 1E 00"), 1).hour == 7


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("E8 07 03 0F 07 1E", "need at least 7"),
        ("E8 07 0D 0F 07 1E 00", "month 13"),
        ("E8 07 03 20 07 1E 00", "day 32"),
        ("E8 07 02 1E 07 1E 00", "day 30 does not exist"),
        ("E8 07 03 0F 18 1E 00", "valid time of day"),
        ("E8 07 03 0F 07 3C 00", "valid time of day"),
        ("01 00 03 0F 07 1E 00", "year 1 is reserved"),
    ],
)
def test_date_time_malformed(wire, reason):
    with pytest.raises(GattDecodeError, match=reason) as err:
        gc.decode_date_time(h(wire))
    assert "2a08" in str(err.value)


def test_current_time_vector():
    value = gc.decode_current_time(h("E8 07 03 0F 07 1E 00 05 80 01"))
    assert value.date_time == DateTime7(2024, 3, 15, 7, 30, 0)
    assert value.day_of_week == 5  # Friday
    assert value.fractions256 == 128  # 0.5 s
    assert value.adjust_reason == 0x01  # manual update


def test_encode_current_time_matches_vector():
    dt = datetime(2024, 3, 15, 7, 30, 0, 500_000, tzinfo=CST)
    assert gc.encode_current_time(dt) == h("E8 07 03 0F 07 1E 00 05 80 01")


def test_current_time_unknown_day_of_week():
    assert gc.decode_current_time(h("E8 07 03 0F 07 1E 00 00 00 00")).day_of_week is None


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("E8 07 03 0F 07 1E 00 05 80", "need at least 10"),
        ("E8 07 03 0F 07 1E 00 05 80 01 00", "trailing"),
        ("E8 07 03 0F 07 1E 00 08 80 01", "day of week 8"),
    ],
)
def test_current_time_malformed(wire, reason):
    with pytest.raises(GattDecodeError, match=reason) as err:
        gc.decode_current_time(h(wire))
    assert "2a2b" in str(err.value)


@given(
    st.datetimes(min_value=datetime(1582, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(0, 255),
)
@settings(max_examples=300)
def test_current_time_round_trip(dt, reason):
    decoded = gc.decode_current_time(gc.encode_current_time(dt, reason))
    assert decoded.date_time == DateTime7.from_datetime(dt)
    assert decoded.day_of_week == dt.isoweekday()
    assert decoded.fractions256 == dt.microsecond * 256 // 1_000_000
    assert decoded.adjust_reason == reason


def test_battery_level_vector():
    assert gc.decode_battery_level(h("5A")) == 90


@pytest.mark.parametrize(("wire", "reason"), [("", "need at least 1"), ("65", "reserved"), ("5A 00", "trailing")])
def test_battery_level_malformed(wire, reason):
    with pytest.raises(GattDecodeError, match=reason) as err:
        gc.decode_battery_level(h(wire))
    assert "2a19" in str(err.value)


# ---------------------------------------------------------------------------
# docs/spec/gatt.md §Blood pressure
# ---------------------------------------------------------------------------


def test_bp_vector_1_full_flags_mmhg():
    bp = gc.decode_bp_measurement(h("1E 8A 00 58 00 78 00 00 00 04 11 14 29 3B 3C 00 01 27 00"))
    assert bp.unit == "mmHg"
    assert (bp.systolic_mmhg, bp.diastolic_mmhg, bp.map_mmhg) == (138, 88, 120)
    assert bp.device_time == DateTime7(None, 4, 17, 20, 41, 59)
    assert bp.pulse_bpm == 60
    assert bp.user_id == 1
    assert bp.status == gc.BpStatus(
        body_movement=True,
        cuff_loose=True,
        irregular_pulse=True,
        pulse_range="in_range",
        improper_position=True,
    )
    assert bp.status.questionable


def test_bp_vector_2_kpa_is_converted_to_mmhg():
    bp = gc.decode_bp_measurement(h("15 BD F0 0B 00 9F F0 3C 00 12 00"))
    assert bp.unit == "kPa"
    # 18.9 / 11 / 15.9 kPa at 133.322 Pa per mmHg
    assert bp.systolic_mmhg == pytest.approx(141.8, abs=0.05)
    assert bp.diastolic_mmhg == pytest.approx(82.5, abs=0.05)
    assert bp.map_mmhg == pytest.approx(119.3, abs=0.05)
    assert bp.device_time is None
    assert bp.pulse_bpm == 60  # pulse is bpm whatever the pressure unit
    assert bp.user_id is None
    assert bp.status == gc.BpStatus(
        body_movement=False,
        cuff_loose=True,
        irregular_pulse=False,
        pulse_range="below",
        improper_position=False,
    )


def test_bp_vector_3_with_timestamp_and_irregular_pulse():
    bp = gc.decode_bp_measurement(h("16 B9 00 7D 00 91 00 E8 07 03 0F 07 1E 00 58 00 04 00"))
    assert (bp.systolic_mmhg, bp.diastolic_mmhg, bp.map_mmhg) == (185, 125, 145)
    assert bp.device_time == DateTime7(2024, 3, 15, 7, 30, 0)
    assert bp.pulse_bpm == 88
    assert bp.user_id is None
    assert bp.status.irregular_pulse
    assert not bp.status.questionable
    assert bp.status.pulse_range == "in_range"


def test_bp_vector_4_intermediate_cuff_pressure():
    icp = gc.decode_bp_measurement(h("00 96 00 FF 07 FF 07"))
    assert icp.systolic_mmhg == 150
    assert icp.diastolic_mmhg is Special.NAN
    assert icp.map_mmhg is Special.NAN
    assert icp.pulse_bpm is None and icp.status is None


def test_bp_kpa_keeps_special_values():
    bp = gc.decode_bp_measurement(h("01 BD F0 FF 07 FE 07"))
    assert bp.diastolic_mmhg is Special.NAN
    assert bp.map_mmhg is Special.POS_INF


def test_bp_reserved_pulse_range():
    bp = gc.decode_bp_measurement(h("10 78 00 50 00 5D 00 18 00"))
    assert bp.status.pulse_range == "reserved"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("", "0 bytes, need at least 7"),
        ("1E 8A 00 58 00", "5 bytes, need at least 7 \\(flags \\+ 3 SFLOAT\\)"),
        ("02 8A 00 58 00 78 00 E8 07 03", "date time"),
        ("04 8A 00 58 00 78 00", "pulse rate"),
        ("08 8A 00 58 00 78 00", "user id"),
        ("10 8A 00 58 00 78 00 27", "measurement status"),
        ("00 8A 00 58 00 78 00 00", "trailing"),
        ("02 8A 00 58 00 78 00 E8 07 0D 0F 07 1E 00", "month 13"),
    ],
)
def test_bp_malformed(wire, reason):
    with pytest.raises(GattDecodeError, match=reason) as err:
        gc.decode_bp_measurement(h(wire))
    assert "2a35" in str(err.value)


# ---------------------------------------------------------------------------
# docs/spec/gatt.md §Glucose
# ---------------------------------------------------------------------------


def test_glucose_vector_1_kg_per_l():
    g = gc.decode_glucose_measurement(h("02 2A 00 E8 07 03 0F 07 1E 00 5A B0 11"))
    assert g.seq == 42
    assert g.base_time == DateTime7(2024, 3, 15, 7, 30, 0)
    assert g.time_offset_min is None
    assert g.concentration_mmol_l == 5.0  # 90 mg/dL / 18.016
    assert g.unit_sent == "kg/L"
    assert (g.sample_type, g.sample_location) == (1, 1)  # capillary whole blood, finger
    assert g.sensor_status is None
    assert not g.context_follows
    assert not (g.is_hi or g.is_lo or g.battery_low or g.time_fault or g.is_control_solution)
    assert g.quality_flags == []
    assert g.device_time_with_offset() == DateTime7(2024, 3, 15, 7, 30, 0)


def test_glucose_vector_2_mol_per_l_offset_status_context():
    g = gc.decode_glucose_measurement(h("1F 00 01 E8 07 03 0F 16 05 00 3C 00 1C C0 12 01 00"))
    assert g.seq == 256
    assert g.base_time == DateTime7(2024, 3, 15, 22, 5, 0)
    assert g.time_offset_min == 60
    assert g.device_time_with_offset() == DateTime7(2024, 3, 15, 23, 5, 0)
    assert g.user_facing_datetime(CST) == datetime(2024, 3, 15, 23, 5, tzinfo=CST)
    assert g.concentration_mmol_l == 2.8
    assert g.unit_sent == "mol/L"
    assert (g.sample_type, g.sample_location) == (2, 1)  # capillary plasma, finger
    assert g.sensor_status == 0x0001
    assert g.battery_low
    assert g.context_follows
    assert not g.is_hi and not g.is_lo and not g.time_fault


def test_glucose_vector_3_pos_inf_is_hi():
    g = gc.decode_glucose_measurement(h("0A 07 00 E8 07 03 0F 0C 00 00 FE 07 11 20 00"))
    assert g.seq == 7
    assert g.base_time == DateTime7(2024, 3, 15, 12, 0, 0)
    assert g.concentration_mmol_l is Special.POS_INF
    assert g.sensor_status == 0x0020
    assert g.is_hi
    assert not g.is_lo


def test_glucose_hi_from_inf_alone_and_lo_from_status():
    hi = gc.decode_glucose_measurement(h("02 07 00 E8 07 03 0F 0C 00 00 FE 07 11"))
    assert hi.is_hi and hi.sensor_status is None
    lo = gc.decode_glucose_measurement(h("0A 07 00 E8 07 03 0F 0C 00 00 02 08 11 40 00"))
    assert lo.is_lo and lo.concentration_mmol_l is Special.NEG_INF


def test_glucose_control_solution_by_type_or_location():
    by_type = gc.decode_glucose_measurement(h("02 01 00 E8 07 03 0F 07 1E 00 5A B0 1A"))
    by_location = gc.decode_glucose_measurement(h("02 01 00 E8 07 03 0F 07 1E 00 5A B0 41"))
    assert by_type.is_control_solution and by_location.is_control_solution


def test_glucose_quality_flags_and_time_fault():
    # status bits 2,3,4,7,8,9,10,11 plus bit 1
    g = gc.decode_glucose_measurement(h("08 01 00 E8 07 03 0F 07 1E 00 9E 0F"))
    assert g.concentration_mmol_l is None and g.unit_sent is None
    assert g.quality_flags == [
        "sample_too_small",
        "strip_insertion_error",
        "wrong_strip",
        "temperature_too_high",
        "temperature_too_low",
        "strip_pulled_too_soon",
        "general_device_fault",
    ]
    assert g.time_fault
    assert g.sensor_malfunction


def test_glucose_mg_dl_conversion_keeps_threshold_equivalents():
    # 70 mg/dL is the ADA 3.9 mmol/L boundary; 0.1 rounding keeps it there.
    g = gc.decode_glucose_measurement(h("02 01 00 E8 07 03 0F 07 1E 00 46 B0 11"))
    assert g.concentration_mmol_l == 3.9


def test_glucose_negative_offset_crosses_midnight():
    g = gc.decode_glucose_measurement(h("01 01 00 E8 07 03 0F 00 0A 00 F1 FF"))
    assert g.time_offset_min == -15
    assert g.device_time_with_offset() == DateTime7(2024, 3, 14, 23, 55, 0)


def test_glucose_offset_with_unknown_date_gives_none():
    g = gc.decode_glucose_measurement(h("01 01 00 00 00 03 0F 00 0A 00 3C 00"))
    assert g.device_time_with_offset() is None
    assert g.user_facing_datetime(CST) is None


def test_glucose_offset_past_year_9999_gives_none_not_overflow():
    g = gc.decode_glucose_measurement(h("01 01 00 0F 27 0C 1F 17 3B 00 3C 00"))
    assert g.base_time == DateTime7(9999, 12, 31, 23, 59, 0)
    assert g.device_time_with_offset() is None


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("02 2A 00 E8 07 03", "date time"),
        ("02 2A 00 E8 07 03 0F 07 1E 00 5A B0", "type/sample location"),
        ("01 2A 00 E8 07 03 0F 07 1E 00", "time offset"),
        ("08 2A 00 E8 07 03 0F 07 1E 00 01", "sensor status"),
        ("02 2A 00 E8 07 03 0F 07 1E 00 5A B0 11 00", "trailing"),
        ("", "need at least 1"),
    ],
)
def test_glucose_malformed(wire, reason):
    with pytest.raises(GattDecodeError, match=reason) as err:
        gc.decode_glucose_measurement(h(wire))
    assert "2a18" in str(err.value)


# ---------------------------------------------------------------------------
# docs/spec/gatt.md §Glucose context
# ---------------------------------------------------------------------------


def test_glucose_context_vector():
    c = gc.decode_glucose_context(h("06 00 01 01 51"))
    assert c.seq == 256
    assert c.meal == "preprandial"
    assert c.tester == 1  # self
    assert c.health == 5  # no health issues
    assert c.carbohydrate_id is None and c.hba1c_pct is None


def test_glucose_context_all_fields_in_order():
    wire = h(
        "FF 05 00"  # all flags incl. extended + medication in litres, seq 5
        "00"  # extended flags (zero)
        "01 32 D0"  # carbohydrate id 1 (breakfast), 0.050 kg
        "03"  # meal: fasting
        "F2"  # tester 2 (professional), health 15 (n/a)
        "10 0E 50"  # exercise 3600 s at 80 %
        "02 0A D0"  # medication id 2, 0.010 L
        "41 F0"  # HbA1c 6.5 %
    )
    c = gc.decode_glucose_context(wire)
    assert c.seq == 5
    assert c.extended_flags == 0
    assert (c.carbohydrate_id, c.carbohydrate_kg) == (1, 0.05)
    assert c.meal == "fasting" and c.meal_raw == 3
    assert (c.tester, c.health) == (2, 15)
    assert (c.exercise_duration_s, c.exercise_intensity_pct) == (3600, 80)
    assert (c.medication_id, c.medication_amount, c.medication_unit) == (2, 0.01, "L")
    assert c.hba1c_pct == 6.5


def test_glucose_context_unknown_meal_is_kept_raw():
    c = gc.decode_glucose_context(h("02 01 00 09"))
    assert c.meal is None and c.meal_raw == 9


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("06 00", "sequence number"),
        ("06 00 01 01", "tester/health"),
        ("01 00 01 01 32", "carbohydrate"),
        ("08 00 01 10 0E", "exercise intensity"),
        ("40 00 01 41", "hba1c"),
        ("02 00 01 01 00", "trailing"),
    ],
)
def test_glucose_context_malformed(wire, reason):
    with pytest.raises(GattDecodeError, match=reason) as err:
        gc.decode_glucose_context(h(wire))
    assert "2a34" in str(err.value)


# ---------------------------------------------------------------------------
# docs/spec/gatt.md §RACP
# ---------------------------------------------------------------------------


def test_racp_report_all():
    assert gc.racp_report_all() == h("01 01")


def test_racp_report_from_seq_42():
    assert gc.racp_report_from_seq(42) == h("01 03 01 2A 00")


def test_racp_report_last():
    assert gc.racp_report_last() == h("01 06")


def test_racp_report_count():
    assert gc.racp_report_count() == h("04 01")


def test_racp_abort():
    assert gc.racp_abort() == h("03 00")


def test_racp_report_from_seq_rejects_out_of_range():
    with pytest.raises(ValueError):
        gc.racp_report_from_seq(0x10000)


def test_racp_count_response_10_records():
    assert gc.decode_racp_response(h("05 00 0A 00")) == gc.RacpResponse("count", None, None, None, 10)


def test_racp_response_success():
    r = gc.decode_racp_response(h("06 00 01 01"))
    assert r == gc.RacpResponse("response_code", 1, 1, "success", None)
    assert r.ends_procedure and r.ok


def test_racp_response_no_records():
    r = gc.decode_racp_response(h("06 00 01 06"))
    assert r == gc.RacpResponse("response_code", 1, 6, "no_records_found", None)
    assert r.ends_procedure and r.ok


def test_racp_response_unknown_code_has_no_name():
    r = gc.decode_racp_response(h("06 00 01 7F"))
    assert r.code == 0x7F and r.code_name is None and not r.ok


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("", "op code"),
        ("05 00 0A", "record count"),
        ("06 00 01", "response code"),
        ("06 00 01 01 00", "trailing"),
        ("01 01", "not a response"),
        ("05 01 0A 00", "operator 1"),
    ],
)
def test_racp_malformed(wire, reason):
    with pytest.raises(GattDecodeError, match=reason) as err:
        gc.decode_racp_response(h(wire))
    assert "2a52" in str(err.value)


# ---------------------------------------------------------------------------
# docs/spec/gatt.md §Heart rate
# ---------------------------------------------------------------------------


def test_hr_00_55_is_85_contact_unsupported():
    assert gc.decode_heart_rate(h("00 55")) == gc.HeartRateMeasurement(85, None, None, ())


def test_hr_04_ff_is_255_no_contact():
    hr = gc.decode_heart_rate(h("04 FF"))
    assert hr.bpm == 255
    assert hr.sensor_contact is False


def test_hr_with_contact_and_rr():
    hr = gc.decode_heart_rate(h("16 48 A0 03 B4 03"))
    assert hr.bpm == 72
    assert hr.sensor_contact is True
    assert hr.energy_kj is None
    assert hr.rr_ms == (906.25, 925.78125)


def test_hr_uint16_energy_and_rr_nordic():
    hr = gc.decode_heart_rate(h("1F 01 01 32 01 01 00 02 01 FF FF"))
    assert hr.bpm == 257
    assert hr.sensor_contact is True
    assert hr.energy_kj == 306
    assert hr.rr_ms == tuple(v * 1000 / 1024 for v in (1, 258, 65535))
    assert hr.rr_ms == (0.9765625, 251.953125, 63999.0234375)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("", "flags"),
        ("00", "heart rate \\(uint8\\)"),
        ("01 48", "heart rate \\(uint16\\)"),
        ("08 48 01", "energy"),
        ("10 48 A0 03 B4", "not a whole number"),
        ("00 48 00", "trailing"),
    ],
)
def test_hr_malformed(wire, reason):
    with pytest.raises(GattDecodeError, match=reason) as err:
        gc.decode_heart_rate(h(wire))
    assert "2a37" in str(err.value)


# ---------------------------------------------------------------------------
# docs/spec/gatt.md §Polar H10 PMD
# ---------------------------------------------------------------------------


def test_polar_start_and_stop_commands():
    assert gc.POLAR_PMD_START_ECG == h("02 00 00 01 82 00 01 01 0E 00")
    assert gc.POLAR_PMD_STOP_ECG == h("03 00")


def test_polar_ecg_frame_vector():
    frame = gc.decode_polar_pmd_ecg(h("00 00 E4 0B 54 02 00 00 00 00 E8 FF FF 2C 01 00 F4 01 00"))
    assert frame.last_sample_ns_since_2000 == 10_000_000_000
    assert frame.samples_uv == (-24, 300, 500)
    assert frame.fs == 130.0
    assert frame.last_sample_time() == datetime(2000, 1, 1, 0, 0, 10)
    times = frame.sample_times_ns_since_2000()
    assert times[-1] == 10_000_000_000
    assert times[0] == 10_000_000_000 - round(2 * 1e9 / 130)


def test_polar_pmd_response_ok():
    r = gc.decode_polar_pmd_response(h("F0 02 00 00 00"))
    assert (r.op, r.measurement_type, r.status, r.params) == (2, 0, 0, h("00"))
    assert r.ok


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("00 00 E4 0B 54 02 00 00 00 80 E8 FF FF", "compressed"),
        ("00 00 E4 0B 54 02 00 00 00 01 E8 FF FF", "frame type 1"),
        ("02 00 E4 0B 54 02 00 00 00 00 E8 FF FF", "measurement type 2"),
        ("00 00 E4 0B 54 02 00 00 00 00 E8 FF", "multiple of 3"),
        ("00 00 E4 0B 54 02 00 00 00 00", "no samples"),
        ("00 00 E4 0B", "timestamp"),
    ],
)
def test_polar_ecg_malformed(wire, reason):
    with pytest.raises(GattDecodeError, match=reason) as err:
        gc.decode_polar_pmd_ecg(h(wire))
    assert "polar" in str(err.value)


# ---------------------------------------------------------------------------
# Vendor ECG (docs/vendor_ecg.md)
# ---------------------------------------------------------------------------

VENDOR_EXAMPLE_1 = h("01 00 2A 00 FA 00 7D 00 04 00 00 00 64 00 9C FF 20 03")
VENDOR_EXAMPLE_2 = h("01 03 2B 00 FA 00 7D 00 02 00 FF 7F 00 80")


def test_vendor_uuids_are_nordic_uart_shaped_and_our_own():
    assert gc.VENDOR_ECG_SERVICE_UUID == "5a7e0001-3c1d-4b9a-8f6e-2d4c9b1e7a30"
    assert gc.VENDOR_ECG_DATA_UUID == "5a7e0003-3c1d-4b9a-8f6e-2d4c9b1e7a30"
    assert gc.VENDOR_ECG_SERVICE_UUID[8:] == gc.VENDOR_ECG_DATA_UUID[8:]
    assert not gc.VENDOR_ECG_SERVICE_UUID.startswith("6e40")


def test_vendor_doc_example_1_decodes():
    frame = gc.decode_vendor_ecg_frame(VENDOR_EXAMPLE_1)
    assert (frame.seq, frame.fs, frame.uv_per_lsb) == (42, 250, 1.25)
    assert not frame.lead_off and not frame.saturated
    assert frame.samples.dtype == np.int16
    assert frame.samples.tolist() == [0, 100, -100, 800]
    assert frame.samples_uv().tolist() == [0.0, 125.0, -125.0, 1000.0]
    assert frame.duration_s == pytest.approx(0.016)
    assert not frame.full_scale_mask().any()


def test_vendor_doc_example_1_encodes():
    samples = np.array([0, 100, -100, 800], dtype=np.int16)
    assert gc.encode_vendor_ecg_frame(42, 250, 1.25, False, samples) == VENDOR_EXAMPLE_1


def test_vendor_doc_example_2_lead_off_saturated():
    frame = gc.decode_vendor_ecg_frame(VENDOR_EXAMPLE_2)
    assert frame.seq == 43 and frame.lead_off and frame.saturated
    assert frame.samples.tolist() == [32767, -32768]
    assert frame.samples_uv().tolist() == [40958.75, -40960.0]
    assert frame.full_scale_mask().all()
    # the encoder sets the saturated bit itself when a sample is at full scale
    assert gc.encode_vendor_ecg_frame(43, 250, 1.25, True, np.array([32767, -32768])) == VENDOR_EXAMPLE_2


def test_vendor_doc_contains_the_example_vectors():

    doc = (REPO / "docs" / "vendor_ecg.md").read_text(encoding="utf-8")
    assert VENDOR_EXAMPLE_1.hex(" ").upper() in doc
    assert VENDOR_EXAMPLE_2.hex(" ").upper() in doc
    assert gc.VENDOR_ECG_SERVICE_UUID in doc and gc.VENDOR_ECG_DATA_UUID in doc


def test_vendor_decoded_samples_are_read_only():
    frame = gc.decode_vendor_ecg_frame(VENDOR_EXAMPLE_1)
    with pytest.raises(ValueError):
        frame.samples[0] = 1


def test_vendor_explicit_saturated_flag_wins():
    wire = gc.encode_vendor_ecg_frame(1, 250, 1.0, False, np.array([32767]), saturated=False)
    assert not gc.decode_vendor_ecg_frame(wire).saturated


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("01 00 2A 00 FA 00 7D 00 04", "need at least 10"),
        ("02 00 2A 00 FA 00 7D 00 01 00 00 00", "version 2"),
        ("01 04 2A 00 FA 00 7D 00 01 00 00 00", "reserved flag"),
        ("01 00 2A 00 7C 00 7D 00 01 00 00 00", "sample rate 124"),
        ("01 00 2A 00 E9 03 7D 00 01 00 00 00", "sample rate 1001"),
        ("01 00 2A 00 FA 00 00 00 01 00 00 00", "scale 0"),
        ("01 00 2A 00 FA 00 7D 00 00 00", "sample count 0"),
        ("01 00 2A 00 FA 00 7D 00 FC 00", "sample count 252"),
        ("01 00 2A 00 FA 00 7D 00 02 00 00 00", "announces 2 samples"),
        ("01 00 2A 00 FA 00 7D 00 01 00 00 00 00", "announces 1 samples"),
    ],
)
def test_vendor_malformed(wire, reason):
    with pytest.raises(GattDecodeError, match=reason) as err:
        gc.decode_vendor_ecg_frame(h(wire))
    assert "vendor ecg" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"seq": 70000}, "seq"),
        ({"fs": 100}, "fs"),
        ({"uv_per_lsb": 0.153}, "uv_per_lsb"),
        ({"uv_per_lsb": 0.0}, "uv_per_lsb"),
        ({"samples": np.array([], dtype=np.int16)}, "samples"),
        ({"samples": np.zeros(252, dtype=np.int16)}, "samples"),
        ({"samples": np.array([40000])}, "int16"),
        ({"samples": np.array([0.5])}, "integer"),
        ({"samples": np.zeros((2, 2), dtype=np.int16)}, "1-D"),
    ],
)
def test_vendor_encoder_rejects_what_the_format_cannot_carry(kwargs, reason):
    args = {"seq": 1, "fs": 250, "uv_per_lsb": 1.0, "lead_off": False, "samples": np.array([1, 2])}
    args.update(kwargs)
    with pytest.raises(ValueError, match=reason):
        gc.encode_vendor_ecg_frame(**args)


@given(
    seq=st.integers(0, 0xFFFF),
    fs=st.integers(125, 1000),
    hundredths=st.integers(1, 0xFFFF),
    lead_off=st.booleans(),
    samples=st.lists(st.integers(-32768, 32767), min_size=1, max_size=gc.VENDOR_ECG_MAX_SAMPLES),
)
@settings(max_examples=300)
def test_vendor_round_trip(seq, fs, hundredths, lead_off, samples):
    uv = hundredths / 100
    wire = gc.encode_vendor_ecg_frame(seq, fs, uv, lead_off, np.array(samples))
    frame = gc.decode_vendor_ecg_frame(wire)
    assert (frame.seq, frame.fs, frame.uv_per_lsb, frame.lead_off) == (seq, fs, uv, lead_off)
    assert frame.samples.tolist() == samples
    assert frame.saturated == any(s in (32767, -32768) for s in samples)
    assert frame == gc.decode_vendor_ecg_frame(wire)


# ---------------------------------------------------------------------------
# Fuzz: every decoder returns or raises GattDecodeError, nothing else
# ---------------------------------------------------------------------------

DECODERS = [
    gc.decode_date_time,
    gc.decode_current_time,
    gc.decode_battery_level,
    gc.decode_bp_measurement,
    gc.decode_glucose_measurement,
    gc.decode_glucose_context,
    gc.decode_heart_rate,
    gc.decode_racp_response,
    gc.decode_polar_pmd_response,
    gc.decode_polar_pmd_ecg,
    gc.decode_vendor_ecg_frame,
    lambda data: gc.read_sfloat(data, 0),
    lambda data: gc.read_float(data, 0),
]


def _assert_no_number_is_nan(value: object) -> None:
    # Special values must surface as Special, never as float('nan')/inf.
    for field in getattr(value, "__dataclass_fields__", {}):
        item = getattr(value, field)
        if isinstance(item, float):
            assert math.isfinite(item), field
        elif hasattr(item, "__dataclass_fields__"):
            _assert_no_number_is_nan(item)


def _fuzz(decoder, data: bytes) -> None:
    try:
        result = decoder(data)
    except GattDecodeError as err:
        assert str(err)
        return
    if isinstance(result, float):
        assert math.isfinite(result)
    _assert_no_number_is_nan(result)


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: getattr(d, "__name__", "reader"))
@given(data=st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_decoder_fuzz_raises_only_gatt_decode_error(decoder, data):
    _fuzz(decoder, data)


@given(seq=st.integers(0, 0xFFFF), body=st.binary(max_size=60), flags=st.integers(0, 0xFF))
@settings(max_examples=300, deadline=None)
def test_glucose_fuzz_with_plausible_header(seq, body, flags):
    # Random bytes rarely get past the date check; give the decoder a valid prefix.
    data = bytes([flags]) + seq.to_bytes(2, "little") + h("E8 07 03 0F 07 1E 00") + body
    _fuzz(gc.decode_glucose_measurement, data)
    _fuzz(gc.decode_bp_measurement, bytes([flags]) + h("78 00 50 00 5D 00 E8 07 03 0F 07 1E 00") + body)
