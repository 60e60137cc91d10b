"""Rule state survives a restart: the gateway rebuilds it from the reading store (stream/history.py).

A power cut between a crisis reading and its repeat must not turn a confirmed
crisis into two unconfirmed readings, and the home-BP window must keep its
week of readings. The replay itself raises nothing.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from stream.core import Counters, StreamCore
from stream.ecg_frames import EcgFrameTracker
from stream.history import recent_readings
from stream.models import (
    CHINA_TZ,
    Accepted,
    BloodPressureReading,
    Condition,
    Finding,
    GlucoseReading,
)
from stream.store import ReadingStore
from stream.thresholds import Thresholds

NOW = datetime.now(CHINA_TZ).replace(microsecond=0)


class Box:
    """One gateway lifetime: a store on `path` and a stream core; findings collected."""

    def __init__(self, path: Path) -> None:
        self.store = ReadingStore(path)
        self.findings: list[Finding] = []

        async def publish(acc: Accepted) -> None:
            return None

        async def on_finding(f: Finding) -> None:
            self.findings.append(f)

        self.core = StreamCore(
            self.store, {}, Thresholds(), publish, on_finding, Counters(), EcgFrameTracker(), clock=lambda: NOW
        )

    def feed(self, reading, minutes_ago: float = 0.0, device: str = "bp-1") -> list[Finding]:
        before = len(self.findings)
        acc = Accepted(
            reading=reading,
            patient_id="p-1",
            device_id=device,
            received_at=NOW - timedelta(minutes=minutes_ago) + timedelta(seconds=1),
            idempotency_key=f"{device}-{reading.ts.isoformat()}",
        )
        asyncio.run(self.core.process(acc))
        return self.findings[before:]

    def restart(self) -> Box:
        """A power cut: this box's memory is gone; a new one starts on the same storage."""
        self.store.close()
        new = Box(self.store.path.parent)
        new.core.restore("p-1", recent_readings(new.store.path, "p-1", NOW))
        return new


def bp(sys_: float, dia: float, minutes_ago: float) -> BloodPressureReading:
    return BloodPressureReading(ts=NOW - timedelta(minutes=minutes_ago), systolic=sys_, diastolic=dia, pulse=80)


def crisis(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.condition is Condition.BP_CRISIS and f.active]


def test_crisis_confirmed_across_a_power_cut(tmp_path):
    box = Box(tmp_path)
    assert crisis(box.feed(bp(188, 119, minutes_ago=3), minutes_ago=3)) == []
    box = box.restart()
    assert box.findings == []  # restoring raised nothing
    assert len(crisis(box.feed(bp(191, 121, minutes_ago=0)))) == 1


def test_without_the_restore_the_repeat_alone_does_not_confirm(tmp_path):
    box = Box(tmp_path)
    box.feed(bp(188, 119, minutes_ago=3), minutes_ago=3)
    box.store.close()
    fresh = Box(tmp_path)  # what the gateway did before: empty rule state after a restart
    assert crisis(fresh.feed(bp(191, 121, minutes_ago=0))) == []


def test_home_bp_window_survives_a_restart(tmp_path):
    box = Box(tmp_path)
    days = [6, 5, 4, 3, 2]
    high = []
    for d in days:  # two high-ish readings a day: the 7-day home mean is what says bp_high
        for h in (0, 12 * 60):
            high += [
                f
                for f in box.feed(bp(150, 96, minutes_ago=d * 1440 - h), minutes_ago=d * 1440 - h)
                if f.condition is Condition.BP_HIGH and f.active
            ]
    box = box.restart()
    after = [f for f in box.feed(bp(150, 96, minutes_ago=1), minutes_ago=1) if f.condition is Condition.BP_HIGH]
    # Same decision as an uninterrupted run on the same readings.
    ref = Box(tmp_path / "ref")
    for d in days:
        for h in (0, 12 * 60):
            ref.feed(bp(150, 96, minutes_ago=d * 1440 - h), minutes_ago=d * 1440 - h)
    ref_after = [f for f in ref.feed(bp(150, 96, minutes_ago=1), minutes_ago=1) if f.condition is Condition.BP_HIGH]

    def key(fs: list[Finding]) -> list[tuple]:
        return [(f.active, f.evidence.get("mean_systolic"), f.evidence.get("readings")) for f in fs]

    assert key(after) == key(ref_after) == [(True, 150.0, 11)]  # the week's 10 readings + this one
    assert high  # bp_high was reached before the cut, once 6 readings were in the window


def test_history_reads_back_every_kind_in_arrival_order_and_skips_old_rows(tmp_path):
    box = Box(tmp_path)
    box.feed(bp(120, 80, minutes_ago=20 * 1440), minutes_ago=20 * 1440)  # outside the window
    box.feed(GlucoseReading(ts=NOW - timedelta(minutes=5), mmol_l=3.6, meal="fasting"), minutes_ago=5, device="glu-1")
    box.feed(bp(131, 82, minutes_ago=9), minutes_ago=2)  # measured earlier, arrived later (a back-fill)
    got = recent_readings(box.store.path, "p-1", NOW)
    assert [(a.device_id, a.reading.kind) for a in got] == [("glu-1", "glucose"), ("bp-1", "blood_pressure")]
    assert got[0].reading.mmol_l == 3.6 and got[1].reading.systolic == 131
    assert recent_readings(tmp_path / "missing.db", "p-1", NOW) == []
