"""The InfluxDB sink: the documented schema, and a real VictoriaMetrics (its InfluxDB 2.x write API)
read back through /api/v1/export, including a TSDB outage during which nothing is lost."""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime

import pytest

from outbound.influx_sink import InfluxSink, InfluxWriter, to_line
from stream.models import (
    CHINA_TZ,
    Accepted,
    BloodPressureReading,
    BpStatusFlags,
    EcgFrame,
    EcgSummary,
    GlucoseReading,
)
from tests.support.store_forward import (
    CLINIC,
    DevicePublisher,
    PersistentMosquitto,
    VictoriaMetrics,
    bp,
    glucose,
    stored_keys,
    ts_at,
    wait_gateway_online,
    wait_until,
    write_config,
)

T = datetime(2025, 3, 1, 8, 30, 0, 250000, tzinfo=CHINA_TZ)


def _acc(reading, device="bp-0001", patient="p-0001") -> Accepted:
    return Accepted(reading=reading, patient_id=patient, device_id=device, received_at=T, idempotency_key="k")


def test_line_protocol_schema():
    line = to_line(
        _acc(
            BloodPressureReading(
                ts=T, systolic=182, diastolic=112, pulse=88, status=BpStatusFlags(irregular_pulse=True)
            )
        ),
        "c1",
    )
    assert line == (
        "vitals,clinic=c1,device=bp-0001,kind=blood_pressure,patient=p-0001 "
        "systolic=182.0,diastolic=112.0,pulse=88.0,body_movement=0.0,irregular_pulse=1.0,cuff_loose=0.0 "
        f"{int(T.timestamp() * 1000)}"
    )
    hi = to_line(_acc(GlucoseReading(ts=T, seq=3, range="hi"), device="glu-1"), "c1")
    assert hi is not None and " range_hi=1.0 " in hi and "mmol_l" not in hi
    summary = to_line(_acc(EcgSummary(ts=T, hr_bpm=71.5, quality=0.9, beats={"N": 70, "V": 2}), device="ecg-1"), "c1")
    assert (
        summary is not None and "kind=ecg_summary" in summary and "hr_bpm=71.5" in summary and "beats=72.0" in summary
    )
    # Raw ECG is never a time series.
    assert to_line(_acc(EcgFrame(ts=T, fs=250, samples_uv=[0.0] * 250), device="ecg-1"), "c1") is None


def test_tag_values_are_escaped():
    line = to_line(_acc(BloodPressureReading(ts=T, systolic=120, diastolic=80), device="a b,c=d"), "c 1")
    assert line is not None and line.startswith("vitals,clinic=c\\ 1,device=a\\ b\\,c\\=d,")


@pytest.fixture
def vm(tmp_path):
    v = VictoriaMetrics(tmp_path)
    yield v
    v.stop()


def test_sink_writes_batches_and_survives_an_outage(tmp_path, vm):
    async def scenario() -> dict:
        sink = InfluxSink(
            "c1", tmp_path, InfluxWriter(vm.url, "", "vitalgate", "vitalgate"), batch_size=100, flush_interval_s=0.1
        )
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))

        def put(i: int) -> None:
            sink.stage(
                _acc(
                    BloodPressureReading(
                        ts=datetime.fromisoformat(ts_at(i)), seq=i, systolic=100 + i % 50, diastolic=70
                    )
                )
            )

        for i in range(250):
            put(i)
        sink.flush()
        while sink.pending:
            await asyncio.sleep(0.05)
        vm.stop()  # the TSDB goes away: lines wait in the outbox, the writer backs off
        for i in range(250, 600):
            put(i)
            if i % 50 == 0:
                sink.flush()
        sink.flush()
        await asyncio.sleep(1.5)
        held = sink.pending
        failures = sink.failures
        await asyncio.to_thread(vm.start)
        for _ in range(300):
            if sink.pending == 0:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await task
        out = {"held": held, "failures": failures, **sink.counts()}
        sink.close()
        return out

    c = asyncio.run(scenario())
    assert c["held"] == 350 and c["failures"] >= 1 and c["pending"] == 0
    samples = vm.samples("vitals_systolic")
    assert len(samples) == 600, "every point exactly once"
    labels = samples[0][0]
    assert {k: labels[k] for k in ("clinic", "patient", "device", "kind")} == {
        "clinic": "c1",
        "patient": "p-0001",
        "device": "bp-0001",
        "kind": "blood_pressure",
    }


@pytest.mark.broker
def test_gateway_into_victoriametrics_through_an_outage(tmp_path, vm, gateway_process):
    """Mosquitto -> vitalgate run -> VictoriaMetrics: readings in = points out, exactly once, across a VM outage."""
    local = PersistentMosquitto(tmp_path, "local")
    try:
        cfg = write_config(tmp_path, local.port, patients=3, influx_url=vm.url)
        devices = DevicePublisher(local.port)
        gw = gateway_process(cfg)
        wait_gateway_online(local.port)
        n = 0

        def send(k: int) -> None:
            nonlocal n
            for _ in range(k):
                p = n % 3 + 1
                if n % 10 == 9:
                    devices.publish(f"vg/{CLINIC}/device/glu-{p:04d}/reading", glucose(n, ts_at(n), 5.5))
                else:
                    devices.publish(f"vg/{CLINIC}/device/bp-{p:04d}/reading", bp(n, ts_at(n), sys_=110 + n % 40))
                n += 1

        send(400)
        wait_until(lambda: len(stored_keys(tmp_path / "var")) >= 400, 30, "the first readings stored")
        vm.stop()
        send(600)  # the TSDB is down while readings flow
        wait_until(lambda: len(stored_keys(tmp_path / "var")) >= 1000, 30, "every reading stored during the outage")
        vm.start()

        def points() -> int:
            return len(vm.samples("vitals_systolic")) + len(vm.samples("vitals_mmol_l"))

        wait_until(lambda: points() >= 1000, 60, "every reading in VictoriaMetrics", every=0.5)
        assert gw.stop(signal.SIGTERM) == 0
        bp_points = vm.samples("vitals_systolic")
        glu_points = vm.samples("vitals_mmol_l")
        assert len(bp_points) == 900 and len(glu_points) == 100, "exactly once"
        assert {s[0]["patient"] for s in bp_points} == {"p-0001", "p-0002", "p-0003"}
        assert all(set(s[0]) >= {"clinic", "patient", "device", "kind"} for s in bp_points)
        print(
            f"\n1000 readings in, 1000 stored, {len(bp_points) + len(glu_points)} points in VictoriaMetrics "
            "(600 of them written after the outage)"
        )
        devices.close()
    finally:
        local.stop()
