"""`vitalgate run` with BLE devices against the mock BlueZ: the same patient-topic readings as the MQTT path."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from simulators.ble.bluez import MockBlueZ
from simulators.ble.virtual_devices import BloodPressureCuff, GlucoseMeter

pytestmark = [pytest.mark.ble, pytest.mark.broker]

CUFF = "C0:26:DA:00:50:01"
METER = "C0:26:DA:00:50:02"


async def poll(pred: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def test_vitalgate_run_publishes_ble_readings_like_mqtt_ones_through_reconnects(
    bluez: MockBlueZ, tmp_path: Path, broker, watcher_factory, gateway_process
) -> None:
    cuff = bluez.add(BloodPressureCuff(CUFF, battery=15))
    meter = bluez.add(GlucoseMeter(METER))
    for day, v in enumerate((5.6, 6.4, 7.9), start=10):
        meter.add_record(v, when=datetime(2024, 3, day, 7, 0), meal="fasting")
    bp_bytes = cuff.measure(146, 93, 76, when=datetime(2024, 3, 15, 8, 0))
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
clinic: c1
broker: {{host: 127.0.0.1, port: {broker.port}}}
storage: {{path: {tmp_path / "var"}}}
status: {{interval: 1s}}
patients:
  - id: p-0001
    devices:
      - {{id: bp-0001, kind: blood_pressure, ble: {{address: "{CUFF}", profile: blood_pressure}}}}
      - {{id: glu-0001, kind: glucose, ble: {{name: "Glucose-Meter", profile: glucose}}}}
  - id: p-0002
    devices:
      - {{id: bp-0002, kind: blood_pressure}}
""")
    watcher = watcher_factory(broker.port, ["vg/c1/patient/+/reading", "vg/c1/alert/+", "vg/c1/status"])
    gw = gateway_process(config)  # inherits DBUS_SYSTEM_BUS_ADDRESS: bleak in the gateway talks to our mock

    def readings(patient: str, kind: str) -> list[dict]:
        return [b for t, b in watcher.json(f"vg/c1/patient/{patient}/reading") if b.get("kind") == kind]

    await poll(lambda: readings("p-0001", "blood_pressure"), what="BLE BP reading on the patient topic")
    await poll(lambda: len(readings("p-0001", "glucose")) == 3, what="back-filled glucose records")
    await poll(
        lambda: any(b.get("condition") == "battery_low" for _, b in watcher.json("vg/c1/alert/village")),
        what="battery_low alert",
    )

    # The same cuff bytes through the MQTT gatt door, for another patient: the same public reading.
    await asyncio.to_thread(watcher.publish, "vg/c1/device/bp-0002/gatt/2a35", bp_bytes)
    mqtt_bp = (await poll(lambda: readings("p-0002", "blood_pressure"), what="MQTT BP reading"))[0]
    ble_bp = readings("p-0001", "blood_pressure")[0]
    ids = {"patient_id", "device_id", "received_at"}
    assert {k: v for k, v in ble_bp.items() if k not in ids} == {k: v for k, v in mqtt_bp.items() if k not in ids}
    assert ble_bp["systolic"] == 146 and ble_bp["ts"] == "2024-03-15T08:00:00.000+08:00"

    # Out of range, two more records, back: each record once, nothing lost.
    meter.leave()
    meter.add_record(3.5, when=datetime(2024, 3, 13, 7, 0))
    meter.add_record(4.1, when=datetime(2024, 3, 14, 7, 0))
    await asyncio.sleep(0.5)
    meter.come_back()
    await poll(lambda: len(readings("p-0001", "glucose")) == 5, what="records stored while out of range")
    # A dropped link, a second cuff measurement: re-subscribed, delivered once.
    cuff.drop_link()
    cuff.measure(150, 95, 80, when=datetime(2024, 3, 15, 9, 0))
    await poll(lambda: len(readings("p-0001", "blood_pressure")) == 2, what="BP after a dropped link")

    # The retained status shows each BLE link (connects, errors, clock skew).
    await poll(
        lambda: [
            b for _, b in watcher.json("vg/c1/status") if b.get("ble", {}).get("glu-0001", {}).get("connects", 0) >= 2
        ],
        what="BLE link status",
    )

    rc = await asyncio.to_thread(gw.stop, signal.SIGTERM)  # the mock keeps serving while the gateway disconnects
    assert rc == 0, gw.output()[-3000:]
    glucose = readings("p-0001", "glucose")
    assert sorted(b["seq"] for b in glucose) == [1, 2, 3, 4, 5]
    assert Counter(b["seq"] for b in glucose).most_common(1)[0][1] == 1
    assert {b["meal"] for b in glucose[:3]} == {"fasting"}
    assert meter.deleted == [] and cuff.pending == []
    assert not cuff.connected and not meter.connected  # disconnected on shutdown
