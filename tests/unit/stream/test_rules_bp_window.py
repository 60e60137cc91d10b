"""The incremental BP history (`rules.BpHistory`) decides exactly as the scan it replaced.

The reference below is the previous implementation, verbatim: a deque kept in
device-time order (sorted again on a late reading), the crisis partner found by
scanning it newest first, the 7-day window recomputed over the whole deque on
every reading. Randomized sequences (in order, out of order, back-filled days
late, equal device times, flagged readings, 0.1-mmHg values from kPa cuffs, a
small buffer so eviction happens, short windows so readings expire, thresholds
changed mid-stream) go through `rules.evaluate` twice, once with each, and the
findings, evidence included, must be identical.
"""

from __future__ import annotations

import json
import random
from collections import deque
from datetime import datetime, timedelta

import pytest

from stream import rules
from stream.models import (
    CHINA_TZ,
    Accepted,
    BloodPressureReading,
    BpStatusFlags,
    Condition,
    Finding,
)
from stream.thresholds import BpThresholds, Thresholds

T0 = datetime(2024, 3, 15, 7, 30, tzinfo=CHINA_TZ)


# ---------------------------------------------------------------- the reference (the former scan)


def reference_bp(patient, r, state, th, historical=False):
    t = th.bp
    out: list[Finding] = []
    ev = {"systolic": r.systolic, "diastolic": r.diastolic, "pulse": r.pulse, "ts": r.ts.isoformat()}
    if r.status.questionable:
        ev["flags"] = [k for k, v in r.status.model_dump().items() if v]
    crisis_now = r.systolic >= t.crisis_systolic or r.diastolic >= t.crisis_diastolic
    confirmed = False
    if crisis_now and not r.status.questionable:
        for prev in reversed(state.bp):
            gap = abs(r.ts - prev.ts)
            if (
                t.crisis_confirm_min_gap <= gap <= t.crisis_confirm_max_gap
                and not prev.status.questionable
                and (prev.systolic >= t.crisis_systolic or prev.diastolic >= t.crisis_diastolic)
            ):
                confirmed = True
                ev["confirmed_by"] = {"systolic": prev.systolic, "diastolic": prev.diastolic, "ts": prev.ts.isoformat()}
                break
    reference_insert_ordered(state.bp, r)
    if confirmed:
        out += rules._level(patient, Condition.BP_CRISIS, True, r.ts, ev, state)
    elif not crisis_now and Condition.BP_CRISIS in state.active and not r.status.questionable:
        out += rules._level(patient, Condition.BP_CRISIS, False, r.ts, ev, state)
    window = [b for b in state.bp if r.ts - b.ts <= t.home_mean_window and not b.status.questionable]
    high = [b for b in window if b.systolic >= t.high_systolic or b.diastolic >= t.high_diastolic]
    mean_sys = sum(b.systolic for b in window) / len(window) if window else 0.0
    mean_dia = sum(b.diastolic for b in window) / len(window) if window else 0.0
    mean_high = len(window) >= t.home_mean_min_readings and (
        mean_sys >= t.home_mean_systolic or mean_dia >= t.home_mean_diastolic
    )
    is_high = len(high) >= 2 or mean_high
    ev_high = dict(ev, mean_systolic=round(mean_sys, 1), mean_diastolic=round(mean_dia, 1), readings=len(window))
    out += rules._level(patient, Condition.BP_HIGH, is_high, r.ts, ev_high, state)
    return out


def reference_insert_ordered(buf, r):
    if not buf or buf[-1].ts <= r.ts:
        buf.append(r)
        return
    items = sorted([*buf, r], key=lambda b: b.ts)
    buf.clear()
    buf.extend(items[-(buf.maxlen or len(items)) :])


# ---------------------------------------------------------------- random sequences


def random_thresholds(rng: random.Random) -> Thresholds:
    window = rng.choice([timedelta(minutes=30), timedelta(hours=2), timedelta(days=1), timedelta(days=7)])
    return Thresholds(
        bp=BpThresholds(
            home_mean_window=window,
            home_mean_min_readings=rng.choice([1, 2, 3, 6]),
            home_mean_systolic=rng.choice([125, 135, 140]),
            home_mean_diastolic=rng.choice([80, 85]),
            high_systolic=rng.choice([150, 160]),
            high_diastolic=rng.choice([95, 100]),
            crisis_systolic=rng.choice([170, 180]),
        )
    )


def random_sequence(rng: random.Random, n: int) -> list[tuple[BloodPressureReading, datetime]]:
    """(reading, received_at): mostly in order, with late, back-filled and same-time readings."""
    out = []
    clock = T0
    decimals = rng.random() < 0.3  # a kPa cuff: values to 0.1 mmHg
    for i in range(n):
        clock += timedelta(seconds=rng.choice([30, 60, 90, 120, 180, 240, 300, 400, 900, 3600, 6 * 3600]))
        roll = rng.random()
        if roll < 0.15 and out:  # out of order: a little late
            ts = clock - timedelta(seconds=rng.randint(1, 1800))
        elif roll < 0.22 and out:  # back-filled: hours to days late
            ts = clock - timedelta(minutes=rng.randint(60, 9 * 24 * 60))
        elif roll < 0.30 and out:  # the same device time as an earlier reading
            ts = rng.choice(out)[0].ts
        else:
            ts = clock
        # Around the thresholds, so every rule flips now and then.
        sys_ = rng.choice([rng.randint(100, 150), rng.randint(150, 200), rng.randint(125, 145)])
        dia = rng.choice([rng.randint(60, 95), rng.randint(90, 125), rng.randint(78, 92)])
        if decimals or rng.random() < 0.05:
            sys_ += rng.choice([0.1, 0.25, 0.7, 0.05])
            dia += rng.choice([0.3, 0.1, 0.45])
        flags = {}
        if rng.random() < 0.12:
            flags[rng.choice(["body_movement", "cuff_loose", "improper_position", "irregular_pulse"])] = True
        r = BloodPressureReading(
            ts=ts, systolic=float(sys_), diastolic=float(dia), pulse=70, status=BpStatusFlags(**flags), seq=i
        )
        out.append((r, clock + timedelta(seconds=rng.randint(0, 5))))
    return out


def run(seq, th_for, maxlen: int, reference: bool, monkeypatch) -> list[str]:
    if reference:
        monkeypatch.setattr(rules, "_bp", reference_bp)
        state = rules.PatientRuleState(bp=deque(maxlen=maxlen))  # type: ignore[arg-type]
    else:
        state = rules.PatientRuleState(bp=rules.BpHistory(maxlen))
    out = []
    try:
        for i, (r, received) in enumerate(seq):
            acc = Accepted(reading=r, patient_id="p-1", device_id="bp-1", received_at=received, idempotency_key=f"k{i}")
            found = rules.evaluate(acc, state, th_for(i))
            # JSON with key order: the evidence must be the same dict, built the same way.
            out.append(json.dumps([f.model_dump(mode="json") for f in found]))
            out.append(json.dumps(sorted(c.value for c in state.active)))
            out.append(repr([(b.ts, b.systolic, b.diastolic) for b in state.bp]))
    finally:
        monkeypatch.undo()
    return out


@pytest.mark.parametrize("seed", range(60))
def test_incremental_bp_rules_decide_as_the_full_scan(seed, monkeypatch):
    rng = random.Random(seed)
    n = rng.choice([40, 120, 300])
    maxlen = rng.choice([5, 17, 64, 400])
    th = random_thresholds(rng)
    seq = random_sequence(rng, n)
    want = run(seq, lambda i: th, maxlen, True, monkeypatch)
    got = run(seq, lambda i: th, maxlen, False, monkeypatch)
    assert got == want
    # The comparison means something: the sequences raise and clear alerts.
    assert any('"active": true' in x for x in want)


@pytest.mark.parametrize("seed", range(10))
def test_thresholds_changed_mid_stream_decide_as_the_full_scan(seed, monkeypatch):
    rng = random.Random(1000 + seed)
    ths = [random_thresholds(rng) for _ in range(3)]
    seq = random_sequence(rng, 200)
    switch = lambda i: ths[(i // 50) % 3]  # noqa: E731
    assert run(seq, switch, 64, False, monkeypatch) == run(seq, switch, 64, True, monkeypatch)


def test_window_stats_match_a_brute_force_count():
    """The running sums themselves, for every reading of a shuffled week, after each insert."""
    rng = random.Random(7)
    t = BpThresholds(home_mean_window=timedelta(hours=12))
    hist = rules.BpHistory(50)
    shadow: list[BloodPressureReading] = []
    times = [T0 + timedelta(minutes=37 * i) for i in range(300)]
    rng.shuffle(times[100:])  # the first 100 in order, then anything goes
    for i, ts in enumerate(times):
        r = BloodPressureReading(
            ts=ts,
            systolic=float(rng.randint(110, 175)),
            diastolic=float(rng.randint(65, 105)),
            status=BpStatusFlags(cuff_loose=rng.random() < 0.1),
            seq=i,
        )
        hist.insert(r)
        shadow = sorted([*shadow, r], key=lambda b: b.ts)[-50:]
        assert [(b.ts, b.systolic, b.diastolic, b.questionable) for b in hist] == [
            (b.ts, b.systolic, b.diastolic, b.status.questionable) for b in shadow
        ]
        window = [b for b in shadow if r.ts - b.ts <= t.home_mean_window and not b.status.questionable]
        n, s_sys, s_dia, high = hist.window_stats(r.ts, t)
        assert n == len(window)
        assert s_sys == sum(b.systolic for b in window)
        assert s_dia == sum(b.diastolic for b in window)
        assert high == sum(1 for b in window if b.systolic >= t.high_systolic or b.diastolic >= t.high_diastolic)


def test_crisis_partner_is_the_newest_in_device_order_within_the_gap():
    t = BpThresholds()
    hist = rules.BpHistory()
    for minutes, sys_ in [(0, 185), (2, 190), (3, 120), (4, 186), (30, 200)]:
        hist.insert(BloodPressureReading(ts=T0 + timedelta(minutes=minutes), systolic=sys_, diastolic=100))
    r = BloodPressureReading(ts=T0 + timedelta(minutes=5), systolic=182, diastolic=100)
    assert hist.crisis_partner(r, t).systolic == 186  # minute 30 is too far; minute 4 (1 min) comes first
    r = BloodPressureReading(ts=T0 + timedelta(minutes=4, seconds=30), systolic=182, diastolic=100)
    assert hist.crisis_partner(r, t).systolic == 190  # minute 4 is 30 s away (too close), minute 3 is normal
    r = BloodPressureReading(ts=T0 + timedelta(minutes=12), systolic=182, diastolic=100)
    assert hist.crisis_partner(r, t) is None  # minute 4 is 8 min away, minute 30 18 min


def test_history_keeps_plain_values_not_the_readings():
    """A week of 400 readings for each of hundreds of patients: no pydantic model per reading held."""
    import gc

    from pydantic import BaseModel

    hist = rules.BpHistory()
    hist.insert(BloodPressureReading(ts=T0, systolic=121.0, diastolic=79.0, status=BpStatusFlags(cuff_loose=True)))
    (entry,) = list(hist)
    assert entry == (T0, 121.0, 79.0, True, 121, 79)
    assert not any(isinstance(x, BaseModel) for x in gc.get_referents(entry))


def test_history_is_bounded_and_drops_the_oldest_by_device_time():
    hist = rules.BpHistory(3)
    for m in [10, 20, 30, 5, 25]:
        hist.insert(BloodPressureReading(ts=T0 + timedelta(minutes=m), systolic=120, diastolic=80))
    assert [int((b.ts - T0).total_seconds() // 60) for b in hist] == [20, 25, 30]
