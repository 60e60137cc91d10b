"""Threshold rules for BP, glucose and SpO2 (docs/spec/clinical-rules.md §Routing triggers, §Data quality).

All timing is device time (`ts`); `received_at` only decides whether a reading
is a back-fill. Each test feeds one patient's readings in order through
`rules.evaluate` and looks at the findings that come out.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from stream import rules
from stream.models import (
    CHINA_TZ,
    Accepted,
    BatteryReading,
    BloodPressureReading,
    BpStatusFlags,
    Condition,
    Finding,
    GlucoseReading,
    Severity,
    Spo2Reading,
    Tier,
)
from stream.thresholds import BpThresholds, GlucoseThresholds, Thresholds

T0 = datetime(2024, 3, 15, 7, 30, tzinfo=CHINA_TZ)
DEFAULT = Thresholds()


class Patient:
    """One patient's rule state; `feed` evaluates a reading as the stream core would."""

    def __init__(self, thresholds: Thresholds = DEFAULT, patient_id: str = "p-0001") -> None:
        self.state = rules.PatientRuleState()
        self.th = thresholds
        self.patient_id = patient_id

    def feed(self, reading, received_at: datetime | None = None, device_id: str = "dev-1") -> list[Finding]:
        acc = Accepted(
            reading=reading,
            patient_id=self.patient_id,
            device_id=device_id,
            received_at=received_at or reading.ts + timedelta(seconds=2),
            idempotency_key=f"{device_id}-{reading.ts.isoformat()}",
        )
        return rules.evaluate(acc, self.state, self.th)


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def bp(sys_: float, dia: float, when: datetime, **flags: bool) -> BloodPressureReading:
    return BloodPressureReading(ts=when, systolic=sys_, diastolic=dia, pulse=80, status=BpStatusFlags(**flags))


def glu(mmol: float | None, when: datetime, rng: str | None = None, seq: int | None = None) -> GlucoseReading:
    return GlucoseReading(ts=when, mmol_l=mmol, range=rng, seq=seq)


def spo2(value: float, when: datetime) -> Spo2Reading:
    return Spo2Reading(ts=when, spo2=value, pulse=72)


def of(findings: list[Finding], condition: Condition) -> list[Finding]:
    return [f for f in findings if f.condition is condition]


def conditions(findings: list[Finding], active: bool = True) -> set[Condition]:
    return {f.condition for f in findings if f.active is active}


# ---------------------------------------------------------------- bp_crisis


def test_single_crisis_reading_does_not_fire_crisis():
    p = Patient()
    assert Condition.BP_CRISIS not in conditions(p.feed(bp(185, 115, T0)))


@pytest.mark.parametrize("gap_s", [60, 120, 300])
def test_two_unflagged_crisis_readings_1_to_5_min_apart_fire_crisis(gap_s):
    p = Patient()
    p.feed(bp(185, 100, T0))
    [crisis] = of(p.feed(bp(182, 112, at(seconds=gap_s))), Condition.BP_CRISIS)
    assert crisis.active and crisis.patient_id == "p-0001"
    assert crisis.at == at(seconds=gap_s)
    assert crisis.evidence["systolic"] == 182
    assert crisis.evidence["confirmed_by"]["systolic"] == 185
    assert not crisis.follow_up


def test_diastolic_alone_at_crisis_level_counts():
    p = Patient()
    p.feed(bp(150, 112, T0))
    assert Condition.BP_CRISIS in conditions(p.feed(bp(152, 115, at(minutes=2))))


@pytest.mark.parametrize(
    "gap", [timedelta(seconds=30), timedelta(seconds=59), timedelta(minutes=5, seconds=1), timedelta(minutes=10)]
)
def test_crisis_readings_too_close_or_too_far_apart_do_not_confirm(gap):
    p = Patient()
    p.feed(bp(190, 120, T0))
    assert Condition.BP_CRISIS not in conditions(p.feed(bp(190, 120, T0 + gap)))


def test_gap_is_device_time_not_arrival_time():
    # Both readings arrive together (a cuff syncing its memory), taken 2 min apart.
    p = Patient()
    arrival = at(minutes=3)
    p.feed(bp(186, 112, T0), received_at=arrival)
    assert Condition.BP_CRISIS in conditions(p.feed(bp(188, 114, at(minutes=2)), received_at=arrival))
    # ...and two readings taken 30 s apart never confirm however far apart they arrive.
    q = Patient()
    q.feed(bp(186, 112, T0), received_at=at(seconds=1))
    assert Condition.BP_CRISIS not in conditions(q.feed(bp(188, 114, at(seconds=30)), received_at=at(minutes=4)))


def test_a_third_reading_confirms_against_the_one_that_was_too_close():
    p = Patient()
    p.feed(bp(185, 115, T0))
    assert Condition.BP_CRISIS not in conditions(p.feed(bp(185, 115, at(seconds=30))))
    # 90 s after the first, 60 s after the second: confirmed.
    assert Condition.BP_CRISIS in conditions(p.feed(bp(185, 115, at(seconds=90))))


@pytest.mark.parametrize("flag", ["body_movement", "cuff_loose", "improper_position"])
def test_flagged_second_reading_never_confirms_crisis(flag):
    p = Patient()
    p.feed(bp(190, 120, T0))
    findings = p.feed(bp(195, 125, at(minutes=2), **{flag: True}))
    assert Condition.BP_CRISIS not in conditions(findings)


@pytest.mark.parametrize("flag", ["body_movement", "cuff_loose", "improper_position"])
def test_flagged_first_reading_never_confirms_crisis(flag):
    p = Patient()
    p.feed(bp(190, 120, T0, **{flag: True}))
    assert Condition.BP_CRISIS not in conditions(p.feed(bp(195, 125, at(minutes=2))))


def test_irregular_pulse_flag_alone_does_not_block_crisis():
    # Irregular pulse is an AF hint, not a measurement fault (docs/spec/clinical-rules.md §BP readings).
    p = Patient()
    p.feed(bp(190, 120, T0, irregular_pulse=True))
    assert Condition.BP_CRISIS in conditions(p.feed(bp(190, 120, at(minutes=2), irregular_pulse=True)))


def test_crisis_clears_on_an_unflagged_normal_reading_only():
    p = Patient()
    p.feed(bp(190, 120, T0))
    p.feed(bp(190, 120, at(minutes=2)))
    # A flagged low reading is not trusted to clear it either.
    assert of(p.feed(bp(130, 80, at(minutes=10), body_movement=True)), Condition.BP_CRISIS) == []
    [cleared] = of(p.feed(bp(150, 95, at(minutes=15))), Condition.BP_CRISIS)
    assert cleared.active is False
    # Nothing more to clear afterwards.
    assert of(p.feed(bp(140, 90, at(minutes=20))), Condition.BP_CRISIS) == []


def test_crisis_repeats_while_it_persists():
    # The dispatcher turns repeats into updates; the rule reports every confirmed reading.
    p = Patient()
    p.feed(bp(190, 120, T0))
    assert of(p.feed(bp(190, 120, at(minutes=2))), Condition.BP_CRISIS)
    assert of(p.feed(bp(191, 121, at(minutes=4))), Condition.BP_CRISIS)[0].active


# ---------------------------------------------------------------- bp_high


def test_bp_high_needs_two_readings_at_or_above_160_100():
    p = Patient()
    assert Condition.BP_HIGH not in conditions(p.feed(bp(162, 95, T0)))
    assert Condition.BP_HIGH not in conditions(p.feed(bp(150, 90, at(hours=2))))
    [high] = of(p.feed(bp(158, 100, at(hours=4))), Condition.BP_HIGH)
    assert high.active
    assert high.evidence["readings"] == 3


def test_bp_high_boundary_values():
    p = Patient()
    p.feed(bp(159, 99, T0))
    assert Condition.BP_HIGH not in conditions(p.feed(bp(159, 99, at(hours=1))))
    q = Patient()
    q.feed(bp(160, 90, T0))
    assert Condition.BP_HIGH in conditions(q.feed(bp(150, 100, at(hours=1))))


def test_flagged_readings_do_not_count_toward_bp_high():
    p = Patient()
    p.feed(bp(170, 105, T0, cuff_loose=True))
    assert Condition.BP_HIGH not in conditions(p.feed(bp(170, 105, at(hours=1))))


def test_crisis_readings_also_raise_bp_high():
    p = Patient()
    p.feed(bp(190, 120, T0))
    assert conditions(p.feed(bp(190, 120, at(minutes=2)))) == {Condition.BP_CRISIS, Condition.BP_HIGH}


def test_bp_high_from_seven_day_home_mean():
    p = Patient()
    found: list[Finding] = []
    for day in range(6):  # 6 readings averaging 140/88, none >= 160/100
        found = p.feed(bp(140, 88, at(days=day)))
    [high] = of(found, Condition.BP_HIGH)
    assert high.evidence["mean_systolic"] == 140.0 and high.evidence["readings"] == 6


# ---------------------------------------------------------------- glucose


def test_glucose_3_5_is_hypoglycemia():
    [f] = Patient().feed(glu(3.5, T0))
    assert (f.condition, f.active) == (Condition.HYPOGLYCEMIA, True)
    assert f.evidence["mmol_l"] == 3.5
    assert "15 g" in f.evidence["action"]


def test_glucose_2_8_is_severe_hypoglycemia():
    [f] = Patient().feed(glu(2.8, T0))
    assert (f.condition, f.active) == (Condition.HYPOGLYCEMIA_SEVERE, True)


@pytest.mark.parametrize(
    "value, expected",
    [
        (3.9, set()),
        (3.89, {Condition.HYPOGLYCEMIA}),
        (3.0, {Condition.HYPOGLYCEMIA}),
        (2.99, {Condition.HYPOGLYCEMIA_SEVERE}),
    ],
)
def test_hypoglycemia_boundaries(value, expected):
    assert conditions(Patient().feed(glu(value, T0))) == expected


def test_lo_reading_is_severe_hypoglycemia():
    [f] = Patient().feed(glu(None, T0, rng="lo"))
    assert f.condition is Condition.HYPOGLYCEMIA_SEVERE and f.active
    assert f.evidence["meter_range"] == "LO"


def test_still_low_on_the_recheck_is_severe_and_replaces_the_mild_alert():
    p = Patient()
    p.feed(glu(3.5, T0))
    found = p.feed(glu(3.7, at(minutes=15)))
    [severe] = of(found, Condition.HYPOGLYCEMIA_SEVERE)
    assert severe.active and "recheck" in severe.evidence
    [mild] = of(found, Condition.HYPOGLYCEMIA)
    assert mild.active is False  # the mild one clears in favour of the severe one


def test_low_reading_after_the_recheck_window_is_a_new_mild_episode():
    p = Patient()
    p.feed(glu(3.5, T0))
    p.feed(glu(5.5, at(minutes=20)))  # recovered: hypoglycemia clears
    assert conditions(p.feed(glu(3.6, at(hours=3)))) == {Condition.HYPOGLYCEMIA}
    q = Patient()
    q.feed(glu(3.5, T0))
    # Still low but beyond the 1 h recheck window: not escalated to severe.
    assert Condition.HYPOGLYCEMIA_SEVERE not in conditions(q.feed(glu(3.6, at(hours=2))))


def test_recovery_clears_hypoglycemia():
    p = Patient()
    p.feed(glu(3.5, T0))
    [cleared] = p.feed(glu(6.0, at(minutes=15)))
    assert (cleared.condition, cleared.active) == (Condition.HYPOGLYCEMIA, False)


def test_recovery_clears_severe_hypoglycemia():
    p = Patient()
    p.feed(glu(2.5, T0))
    [cleared] = p.feed(glu(6.0, at(minutes=15)))
    assert (cleared.condition, cleared.active) == (Condition.HYPOGLYCEMIA_SEVERE, False)


def test_glucose_14_is_hyperglycemia():
    [f] = Patient().feed(glu(14.0, T0))
    assert (f.condition, f.active, f.tier, f.severity) == (Condition.HYPERGLYCEMIA, True, None, None)


def test_glucose_17_is_crisis_at_the_default_tier():
    [f] = Patient().feed(glu(17.0, T0))
    assert (f.condition, f.active) == (Condition.HYPERGLYCEMIA_CRISIS, True)
    assert f.tier is None  # township by the routing table


@pytest.mark.parametrize("reading", [glu(34.0, T0), glu(33.3, T0), glu(None, T0, rng="hi")], ids=["34", "33.3", "HI"])
def test_very_high_or_hi_is_crisis_for_the_county(reading):
    [f] = Patient().feed(reading)
    assert (f.condition, f.active) == (Condition.HYPERGLYCEMIA_CRISIS, True)
    assert f.tier is Tier.COUNTY and f.severity is Severity.CRITICAL
    assert "suspected" in f.evidence


def test_rising_glucose_moves_from_hyperglycemia_to_crisis():
    p = Patient()
    p.feed(glu(14.0, T0))
    found = p.feed(glu(18.0, at(hours=1)))
    assert conditions(found) == {Condition.HYPERGLYCEMIA_CRISIS}
    assert conditions(found, active=False) == {Condition.HYPERGLYCEMIA}


def test_hyperglycemia_clears_on_recovery():
    p = Patient()
    p.feed(glu(20.0, T0))
    found = p.feed(glu(8.0, at(hours=1)))
    assert conditions(found, active=False) == {Condition.HYPERGLYCEMIA_CRISIS}
    assert conditions(found) == set()


def test_normal_glucose_finds_nothing():
    assert Patient().feed(glu(5.5, T0)) == []


# ---------------------------------------------------------------- SpO2


def test_spo2_low_needs_60_s_of_persistence():
    p = Patient()
    assert p.feed(spo2(88, T0)) == []
    assert p.feed(spo2(87, at(seconds=30))) == []
    assert p.feed(spo2(88, at(seconds=59))) == []
    [f] = p.feed(spo2(88, at(seconds=60)))
    assert (f.condition, f.active) == (Condition.SPO2_LOW, True)
    assert f.tier is None  # township by the routing table
    assert f.evidence["low_since"] == T0.isoformat()


def test_spo2_dip_interrupted_by_a_normal_reading_restarts_the_clock():
    p = Patient()
    p.feed(spo2(88, T0))
    p.feed(spo2(95, at(seconds=40)))
    assert p.feed(spo2(88, at(seconds=50))) == []
    assert p.feed(spo2(88, at(seconds=100))) == []
    assert conditions(p.feed(spo2(88, at(seconds=110)))) == {Condition.SPO2_LOW}


def test_spo2_below_85_for_60_s_goes_to_emergency():
    p = Patient()
    p.feed(spo2(83, T0))
    [f] = p.feed(spo2(82, at(seconds=60)))
    assert f.condition is Condition.SPO2_LOW and f.tier is Tier.EMERGENCY and f.severity is Severity.CRITICAL


def test_spo2_low_clears_when_it_recovers():
    p = Patient()
    p.feed(spo2(88, T0))
    p.feed(spo2(88, at(seconds=60)))
    [cleared] = p.feed(spo2(94, at(seconds=90)))
    assert (cleared.condition, cleared.active) == (Condition.SPO2_LOW, False)
    assert p.feed(spo2(95, at(seconds=120))) == []


def test_spo2_at_90_is_not_low():
    p = Patient()
    p.feed(spo2(90, T0))
    assert p.feed(spo2(90, at(minutes=5))) == []


# ---------------------------------------------------------------- back-filled readings


def test_backfilled_low_glucose_is_a_follow_up():
    # A meter syncing its memory: a 2.8 taken 3 h ago arrives now.
    p = Patient()
    [f] = p.feed(glu(2.8, T0), received_at=at(hours=3))
    assert f.condition is Condition.HYPOGLYCEMIA_SEVERE
    assert f.follow_up is True and f.evidence["backfilled"] is True


def test_backfilled_bp_crisis_is_a_follow_up():
    p = Patient()
    now = at(hours=5)
    p.feed(bp(190, 120, T0), received_at=now)
    [f] = of(p.feed(bp(190, 120, at(minutes=2)), received_at=now), Condition.BP_CRISIS)
    assert f.active and f.follow_up


def test_reading_received_within_an_hour_is_acute():
    [f] = Patient().feed(glu(2.8, T0), received_at=at(minutes=59))
    assert f.follow_up is False and "backfilled" not in f.evidence


def test_backfill_age_is_configurable():
    th = DEFAULT.with_override(Thresholds(backfill_age=timedelta(minutes=10)))
    [f] = Patient(th).feed(glu(2.8, T0), received_at=at(minutes=15))
    assert f.follow_up is True


def test_a_clearing_finding_is_never_marked_follow_up():
    p = Patient()
    p.feed(glu(3.5, T0))
    [cleared] = p.feed(glu(6.0, at(minutes=10)), received_at=at(hours=4))
    assert cleared.active is False and cleared.follow_up is False


_OLD_READING_CLEARS = (
    "BUG: stream/rules.py judges every reading as the newest one: a back-filled reading older than the live "
    "state clears it (_level l.71-73, _glucose l.147-148 resets last_hypo_at, _bp l.103-104). Fix: keep the "
    "device time of the newest reading per rule and never clear/reset state from an older one"
)


def test_backfilled_normal_glucose_does_not_clear_a_live_hypoglycemia():
    p = Patient()
    now = at(hours=3)
    p.feed(glu(3.5, now), received_at=now)
    # The meter syncs its memory: a normal reading from 3 h earlier.
    assert of(p.feed(glu(6.0, T0), received_at=now + timedelta(minutes=5)), Condition.HYPOGLYCEMIA) == []


def test_backfilled_normal_glucose_does_not_hide_a_failed_recheck():
    p = Patient()
    now = at(hours=3)
    p.feed(glu(3.5, now), received_at=now)
    p.feed(glu(6.0, T0), received_at=now + timedelta(minutes=5))
    # Still low 15 min after the first low reading: the recheck failed, this is severe.
    found = p.feed(glu(3.6, now + timedelta(minutes=15)), received_at=now + timedelta(minutes=15))
    assert Condition.HYPOGLYCEMIA_SEVERE in conditions(found)


def test_backfilled_normal_bp_does_not_clear_a_live_crisis():
    p = Patient()
    now = at(hours=3)
    p.feed(bp(190, 120, now), received_at=now)
    p.feed(bp(190, 120, now + timedelta(minutes=2)), received_at=now + timedelta(minutes=2))
    assert of(p.feed(bp(125, 80, T0), received_at=now + timedelta(minutes=3)), Condition.BP_CRISIS) == []


def test_crisis_pair_arriving_newest_first_still_fires():
    p = Patient()
    p.feed(bp(190, 120, at(minutes=2)))
    assert Condition.BP_CRISIS in conditions(p.feed(bp(190, 120, T0)))


# ---------------------------------------------------------------- per-patient thresholds


def test_with_override_changes_only_the_fields_written():
    override = Thresholds(bp=BpThresholds(crisis_systolic=170))
    merged = DEFAULT.with_override(override)
    assert merged.bp.crisis_systolic == 170
    assert merged.bp.crisis_diastolic == 110 and merged.bp.high_systolic == 160
    assert merged.glucose == DEFAULT.glucose and merged.spo2 == DEFAULT.spo2
    assert DEFAULT.with_override(None) is DEFAULT


def test_patient_override_lowers_the_crisis_threshold_for_that_patient_only():
    strict = DEFAULT.with_override(Thresholds(bp=BpThresholds(crisis_systolic=170)))
    default_patient, strict_patient = Patient(DEFAULT), Patient(strict)
    for p in (default_patient, strict_patient):
        p.feed(bp(174, 100, T0))
    assert Condition.BP_CRISIS not in conditions(default_patient.feed(bp(175, 100, at(minutes=2))))
    assert Condition.BP_CRISIS in conditions(strict_patient.feed(bp(175, 100, at(minutes=2))))


def test_patient_override_of_hypo_threshold():
    frail = DEFAULT.with_override(Thresholds(glucose=GlucoseThresholds(hypo=4.2)))
    assert conditions(Patient(frail).feed(glu(4.0, T0))) == {Condition.HYPOGLYCEMIA}
    assert Patient(DEFAULT).feed(glu(4.0, T0)) == []


# ---------------------------------------------------------------- battery


def test_battery_low_raises_and_clears():
    p = Patient()
    assert p.feed(BatteryReading(ts=T0, percent=50)) == []
    [low] = p.feed(BatteryReading(ts=at(hours=1), percent=20))
    assert (low.condition, low.active) == (Condition.BATTERY_LOW, True)
    [ok] = p.feed(BatteryReading(ts=at(hours=2), percent=100))
    assert (ok.condition, ok.active) == (Condition.BATTERY_LOW, False)


def test_glucose_meter_battery_status_bit_raises_battery_low():
    found = Patient().feed(GlucoseReading(ts=T0, mmol_l=5.5, flags=["battery_low"]), device_id="glu-1")
    [f] = found
    assert f.condition is Condition.BATTERY_LOW and f.evidence["device_id"] == "glu-1"


def test_every_finding_names_the_device():
    for f in Patient().feed(glu(2.5, T0), device_id="glu-7"):
        assert f.evidence["device_id"] == "glu-7"
