"""device_offline and missed_readings: raised on silence, cleared when the device speaks again."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from stream.device_watch import DeviceWatch, WatchedDevice
from stream.models import CHINA_TZ, Condition, DeviceKind

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=CHINA_TZ)


def test_streaming_patch_goes_offline_after_its_interval_and_comes_back():
    watch = DeviceWatch([WatchedDevice("ecg-1", "p-1", DeviceKind.ECG, timedelta(minutes=30), None)], T0)
    assert watch.check(T0 + timedelta(minutes=29), {}) == []
    (off,) = watch.check(T0 + timedelta(minutes=31), {})
    assert off.condition is Condition.DEVICE_OFFLINE and off.active and off.patient_id == "p-1"
    assert watch.check(T0 + timedelta(minutes=40), {}) == [], "raised once, not on every check"
    back = T0 + timedelta(minutes=41)
    (clear,) = watch.check(back, {"ecg-1": back})
    assert clear.condition is Condition.DEVICE_OFFLINE and not clear.active


def test_daily_cuff_misses_a_reading_only_when_more_than_a_day_overdue():
    watch = DeviceWatch([WatchedDevice("bp-1", "p-1", DeviceKind.BLOOD_PRESSURE, None, timedelta(hours=24))], T0)
    last = {"bp-1": T0}
    assert watch.check(T0 + timedelta(hours=47), last) == []
    (missed,) = watch.check(T0 + timedelta(hours=49), last)
    assert missed.condition is Condition.MISSED_READINGS and missed.evidence["silent_s"] == 49 * 3600


def test_spot_check_devices_without_schedule_are_never_offline():
    watch = DeviceWatch([WatchedDevice("glu-1", "p-1", DeviceKind.GLUCOSE, None, None)], T0)
    assert watch.check(T0 + timedelta(days=30), {}) == []


@pytest.mark.broker
def test_gateway_raises_and_clears_device_offline_over_mqtt(tmp_path, broker, gateway_process, watcher_factory):
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"""clinic: c2
broker: {{host: 127.0.0.1, port: {broker.port}}}
storage: {{path: {tmp_path / "var"}}}
patients:
  - id: p-0001
    devices:
      - {{id: spo2-0001, kind: spo2, expected_interval: 2s}}
""")
    gw = gateway_process(cfg)
    w = watcher_factory(broker.port, ["vg/c2/#"])
    _, off = w.wait_for(lambda t, b: t == "vg/c2/alert/village" and b.get("condition") == "device_offline", timeout=15)
    assert off["patient_id"] == "p-0001" and off["evidence"]["device_id"] == "spo2-0001"
    ts = datetime.now(CHINA_TZ).isoformat()
    w.publish("vg/c2/device/spo2-0001/reading", json.dumps({"kind": "spo2", "ts": ts, "seq": 1, "spo2": 97}))
    w.wait_for(lambda t, b: b.get("alert_id") == off["alert_id"] and b.get("state") == "resolved", timeout=10)
    assert gw.stop() == 0
