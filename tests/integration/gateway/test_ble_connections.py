"""Connection handling through bleak: backoff by error class, the connection cap, device_offline, battery."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gateway.ble.connection import ErrorClass, RetryPolicy
from simulators.ble.bluez import MockBlueZ
from simulators.ble.virtual_devices import GlucoseMeter, HeartRateStrap
from stream import rules
from stream.models import Condition
from stream.thresholds import Thresholds
from tests.support.ble import running, spec, wait_until  # noqa: F401  (fixture)

pytestmark = pytest.mark.ble

STRAP = "C0:26:DA:00:40:01"


async def test_connect_failures_back_off_and_retry_until_connected(bluez: MockBlueZ, tmp_path: Path) -> None:
    strap = bluez.add(HeartRateStrap(STRAP, period_s=0.05))
    # bleak-retry-connector tries 4 times per establish_connection: 6 failures make it give up once.
    strap.fail_next_connects(6, "abort")
    async with running([spec("hr-0001", "heart_rate", STRAP)], tmp_path) as (ingress, rec):
        await wait_until(lambda: rec.of("hr-0001", "heart_rate"), timeout=15, what="readings after the failures")
        status = ingress.devices["hr-0001"].link.status
    assert strap.stats.failed_connects == 6 and strap.stats.connects == 1
    assert status.failures == {ErrorClass.TRANSIENT.value: 1}
    assert [cls for cls, _ in status.backoffs] == ["transient"]
    assert status.consecutive_failures == 0  # reset by the successful connect
    assert "Software caused connection abort" in (status.last_error or "")


async def test_out_of_slots_backs_off_longer_than_a_transient_failure(bluez: MockBlueZ, tmp_path: Path) -> None:
    strap = bluez.add(HeartRateStrap(STRAP, period_s=0.05))
    # bleak-retry-connector counts these as transient and retries up to 9 times itself.
    strap.fail_next_connects(9, "out_of_slots")
    bluez.forget_after_s = 30.0  # BlueZ's default: keep the device object through the retries
    policy = RetryPolicy.fast()
    async with running([spec("hr-0001", "heart_rate", STRAP)], tmp_path, policy=policy) as (ingress, rec):
        await wait_until(lambda: rec.of("hr-0001", "heart_rate"), timeout=15)
        status = ingress.devices["hr-0001"].link.status
    assert status.failures == {ErrorClass.OUT_OF_SLOTS.value: 1}
    ((cls, delay),) = status.backoffs
    assert delay > policy.base_s[ErrorClass.TRANSIENT] * (1 + policy.jitter)
    assert delay >= policy.base_s[ErrorClass.OUT_OF_SLOTS] * (1 - policy.jitter)


def test_backoff_grows_per_consecutive_failure_up_to_a_cap() -> None:
    p = RetryPolicy(jitter=0.0)
    assert [p.backoff(ErrorClass.TRANSIENT, n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert p.backoff(ErrorClass.TRANSIENT, 30) == p.max_s
    assert p.backoff(ErrorClass.OUT_OF_SLOTS, 1) == 30.0


async def test_many_meters_back_fill_within_the_connection_cap(bluez: MockBlueZ, tmp_path: Path) -> None:
    meters = []
    for i in range(5):
        m = bluez.add(GlucoseMeter(f"C0:26:DA:00:41:0{i}", name=f"Meter-{i}", disconnect_after_s=0.05))
        for v in (5.0, 6.0, 7.0):
            m.add_record(v + i / 10)
        meters.append(m)
    devices = [spec(f"glu-{i}", "glucose", m.address, patient=f"p-{i}") for i, m in enumerate(meters)]
    async with running(devices, tmp_path, max_connections=2) as (_ingress, rec):
        await wait_until(lambda: len(rec.of_kind("glucose")) == 15, timeout=20, what="all 15 records")
    assert bluez.max_connected <= 2  # never more links than the cap
    assert sorted((a.device_id, a.reading.seq) for a in rec.of_kind("glucose")) == [
        (f"glu-{i}", s) for i in range(5) for s in (1, 2, 3)
    ]


async def test_a_vanished_device_raises_device_offline_and_clears_it_when_back(
    bluez: MockBlueZ, tmp_path: Path
) -> None:
    strap = bluez.add(HeartRateStrap(STRAP, period_s=0.1))
    devices = [spec("hr-0001", "heart_rate", STRAP, expected_interval=timedelta(seconds=0.8))]
    async with running(devices, tmp_path) as (ingress, rec):
        await wait_until(lambda: rec.of("hr-0001", "heart_rate"))
        strap.leave()
        raised = await wait_until(lambda: rec.offline("p-0001") == [True], what="device_offline")
        finding = next(f for f in rec.findings if f.active)
        assert finding.condition is Condition.DEVICE_OFFLINE
        assert finding.evidence["device_id"] == "hr-0001" and finding.evidence["silent_s"] >= 0.8
        strap.come_back()
        await wait_until(lambda: rec.offline("p-0001") == [True, False], what="device_offline cleared")
        assert raised and not ingress.devices["hr-0001"].offline
        n = len(rec.of("hr-0001", "heart_rate"))
        await wait_until(lambda: len(rec.of("hr-0001", "heart_rate")) > n, what="readings after coming back")


async def test_low_battery_level_becomes_a_battery_low_finding(bluez: MockBlueZ, tmp_path: Path) -> None:
    strap = bluez.add(HeartRateStrap(STRAP, battery=55))
    async with running([spec("hr-0001", "heart_rate", STRAP)], tmp_path) as (_ingress, rec):
        await wait_until(lambda: rec.of("hr-0001", "battery"), what="battery read on connect")
        strap.set_battery(18)  # 0x2A19 notifies
        await wait_until(lambda: len(rec.of("hr-0001", "battery")) == 2, what="battery notification")
    levels = [a.reading.percent for a in rec.of("hr-0001", "battery")]
    assert levels == [55, 18]
    # The existing stream rules turn the reading into battery_low (<= 20 %).
    state = rules.PatientRuleState()
    findings = [f for a in rec.of("hr-0001", "battery") for f in rules.evaluate(a, state, Thresholds())]
    assert [(f.condition, f.active) for f in findings] == [(Condition.BATTERY_LOW, True)]
