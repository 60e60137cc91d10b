"""BP cuff through bleak and the mock BlueZ: discovery -> connect -> subscribe -> indication -> Accepted."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gateway.ingress import DeviceBinding, DeviceRegistry, decode_message
from simulators.ble.bluez import MockBlueZ
from simulators.ble.virtual_devices import BP_MEASUREMENT, BloodPressureCuff
from stream.models import DeviceKind, Rejected
from tests.support.ble import running, spec, wait_until  # noqa: F401  (fixture)

pytestmark = pytest.mark.ble

CUFF = "C0:26:DA:00:10:01"


async def test_bp_indication_arrives_as_the_same_accepted_reading_as_over_mqtt(
    bluez: MockBlueZ, tmp_path: Path
) -> None:
    cuff = bluez.add(BloodPressureCuff(CUFF, clock_offset=timedelta(minutes=7), battery=64))
    value = cuff.measure(186, 121, 88, when=datetime(2024, 3, 15, 7, 30), irregular_pulse=True)
    async with running([spec("bp-0001", "blood_pressure", CUFF)], tmp_path) as (ingress, rec):
        bp = (await wait_until(lambda: rec.of("bp-0001", "blood_pressure"), what="BP reading"))[0]
        # Indicated once, confirmed by BlueZ: the cuff holds nothing back.
        assert cuff.pending == [] and cuff.delivered == [value]
        battery = await wait_until(lambda: rec.of("bp-0001", "battery"))
        # Current Time read on connect: 7 min skew measured, and the writable clock set.
        assert ingress.devices["bp-0001"].profile.clock_skew_s == pytest.approx(420, abs=2)
        assert abs(cuff.clock_offset.total_seconds()) < 2

    # The same bytes through the MQTT gatt door give the same reading, key and public payload.
    registry = DeviceRegistry([DeviceBinding("bp-0001", "p-0001", DeviceKind.BLOOD_PRESSURE)])
    mqtt = decode_message("vg/c1/device/bp-0001/gatt/2a35", value, "c1", registry, bp.received_at)
    assert not isinstance(mqtt, Rejected)
    assert bp.source == "ble" and mqtt.source == "mqtt_gatt"
    assert bp.reading == mqtt.reading
    assert bp.idempotency_key == mqtt.idempotency_key  # a cuff heard by both doors is stored once
    assert bp.to_public() == mqtt.to_public()
    assert bp.to_public()["systolic"] == 186 and bp.to_public()["status"]["irregular_pulse"] is True
    assert bp.reading.ts.isoformat() == "2024-03-15T07:30:00+08:00"
    assert battery[0].reading.percent == 64


async def test_malformed_values_are_rejected_with_a_reason_and_good_ones_still_flow(
    bluez: MockBlueZ, tmp_path: Path
) -> None:
    cuff = bluez.add(BloodPressureCuff(CUFF))
    async with running([spec("bp-0001", "blood_pressure", CUFF)], tmp_path) as (_ingress, rec):
        await wait_until(lambda: cuff.char(BP_MEASUREMENT).notifying, what="subscription")
        cuff.push_raw(BP_MEASUREMENT, bytes.fromhex("1e 8a 00"))  # truncated
        cuff.push_raw(BP_MEASUREMENT, bytes.fromhex("00 ff 07 58 00 78 00"))  # NaN systolic
        cuff.measure(128, 82, 70)
        await wait_until(lambda: rec.of("bp-0001", "blood_pressure") and len(rec.rejected) >= 2)
    reasons = [(r.reason, r.device_id) for r in rec.rejected]
    assert reasons == [("malformed_gatt", "bp-0001"), ("special_value", "bp-0001")]
    assert "2a35/2a36: 3 bytes, need at least 7" in rec.rejected[0].detail
    assert [a.reading.systolic for a in rec.of("bp-0001", "blood_pressure")] == [128]


async def test_a_cuff_that_sleeps_between_measurements_is_rediscovered_and_resubscribed(
    bluez: MockBlueZ, tmp_path: Path
) -> None:
    # Like a real cuff: advertises with a measurement, disconnects once it is confirmed, sleeps.
    cuff = bluez.add(BloodPressureCuff(CUFF, disconnect_after_s=0.1))
    cuff.measure(141, 92, 77)
    async with running([spec("bp-0001", "blood_pressure", CUFF)], tmp_path) as (ingress, rec):
        await wait_until(lambda: ingress.devices["bp-0001"].link.status.disconnects == 1, what="cuff to power off")
        assert not cuff.advertising
        cuff.measure(152, 96, 81)  # taken while disconnected: held until indicated
        await wait_until(lambda: len(rec.of("bp-0001", "blood_pressure")) == 2, what="second measurement")
    assert [a.reading.systolic for a in rec.of("bp-0001", "blood_pressure")] == [141, 152]
    assert cuff.stats.connects == 2
    assert cuff.stats.subscribes[BP_MEASUREMENT] == 2  # indications re-enabled on the new link
    assert cuff.pending == []
