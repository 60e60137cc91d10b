"""Glucose meter RACP back-fill through bleak: every stored record exactly once, across reconnects and restarts."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from gateway import gatt_codecs as gc
from gateway.ble.racp_watermarks import RacpWatermarks
from simulators.ble.bluez import MockBlueZ
from simulators.ble.virtual_devices import GlucoseMeter
from tests.support.ble import Recorder, running, spec, wait_until  # noqa: F401  (fixture)

pytestmark = pytest.mark.ble

METER = "C0:26:DA:00:20:01"


def saved_watermark(storage: Path) -> int | None:
    marks = RacpWatermarks(storage)
    try:
        return marks.get("glu-0001")
    finally:
        marks.close()


def seqs(rec: Recorder) -> list[int]:
    return [a.reading.seq for a in rec.of("glu-0001", "glucose")]


async def test_backfill_delivers_each_record_once_across_connects_and_a_gateway_restart(
    bluez: MockBlueZ, tmp_path: Path
) -> None:
    meter = bluez.add(GlucoseMeter(METER))
    meter.add_record(5.4, when=datetime(2024, 3, 14, 7, 0), meal="fasting")
    meter.add_record(5.5, when=datetime(2024, 3, 14, 8, 0), control=True)  # control solution: rejected, done
    meter.add_record(9.8, when=datetime(2024, 3, 14, 12, 0), meal="postprandial")
    rec = Recorder()
    devices = [spec("glu-0001", "glucose", METER)]
    async with running(devices, tmp_path, rec) as (ingress, _):
        await wait_until(lambda: len(seqs(rec)) == 2, what="first back-fill")
        assert [r.reason for r in rec.rejected] == ["control_solution"]
        meals = {a.reading.seq: a.reading.meal for a in rec.of("glu-0001", "glucose")}
        assert meals == {1: "fasting", 3: "postprandial"}  # 0x2A34 context merged into its record
        await wait_until(lambda: ingress.watermarks.get("glu-0001") == 3, what="watermark 3 saved")

        meter.leave()  # out of range for a while; the meter keeps measuring
        meter.add_record(2.9, when=datetime(2024, 3, 15, 6, 0))
        meter.add_record(6.2, when=datetime(2024, 3, 15, 18, 0))
        await wait_until(lambda: ingress.devices["glu-0001"].link.status.disconnects == 1)
        meter.come_back()
        await wait_until(lambda: len(seqs(rec)) == 4, what="back-fill after the out-of-range period")

    meter.add_record(7.7, when=datetime(2024, 3, 16, 7, 0))  # taken while the gateway was down
    async with running(devices, tmp_path, rec):  # a new gateway process: same storage, fresh memory
        await wait_until(lambda: len(seqs(rec)) == 5, what="back-fill after restart")

    assert seqs(rec) == [1, 3, 4, 5, 6]
    assert all(n == 1 for n in Counter(a.idempotency_key for a in rec.accepted if a.reading.kind == "glucose").values())
    assert meter.racp_requests == [
        gc.racp_report_all(),  # first contact: everything
        gc.racp_report_from_seq(4),  # after the out-of-range period
        gc.racp_report_from_seq(6),  # after the restart: from the saved watermark
    ]
    assert meter.deleted == []  # never delete records on the meter
    assert saved_watermark(tmp_path) == 6


async def test_nothing_new_means_nothing_delivered_and_a_check_for_a_reset(bluez: MockBlueZ, tmp_path: Path) -> None:
    meter = bluez.add(GlucoseMeter(METER))
    meter.add_record(5.0)
    rec = Recorder()
    async with running([spec("glu-0001", "glucose", METER)], tmp_path, rec) as (ingress, _):
        await wait_until(lambda: seqs(rec) == [1])
        meter.drop_link()
        await wait_until(lambda: len(meter.racp_requests) == 3, what="reconnect and back-fill")
    assert seqs(rec) == [1]
    assert meter.racp_requests[1:] == [gc.racp_report_from_seq(2), gc.racp_report_last()]


async def test_sequence_numbers_going_backwards_resync_with_report_all(bluez: MockBlueZ, tmp_path: Path) -> None:
    meter = bluez.add(GlucoseMeter(METER))
    for v in (5.1, 5.2, 5.3):
        meter.add_record(v)
    rec = Recorder()
    async with running([spec("glu-0001", "glucose", METER)], tmp_path, rec) as (ingress, _):
        await wait_until(lambda: seqs(rec) == [1, 2, 3])
        meter.leave()
        meter.reset_sequence(start=1)  # battery change: memory cleared, numbering restarts
        meter.add_record(4.4, when=datetime(2024, 3, 20, 7, 0))
        meter.add_record(4.5, when=datetime(2024, 3, 20, 19, 0))
        await wait_until(lambda: ingress.devices["glu-0001"].link.status.disconnects == 1)
        meter.come_back()
        profile = ingress.devices["glu-0001"].profile
        await wait_until(lambda: len(seqs(rec)) == 5 and not profile.busy, what="resync")  # type: ignore[attr-defined]
        meter.add_record(4.6, when=datetime(2024, 3, 21, 7, 0))  # live, while connected
        await wait_until(lambda: len(seqs(rec)) == 6)
    assert seqs(rec) == [1, 2, 3, 1, 2, 3]
    assert [a.reading.mmol_l for a in rec.of("glu-0001", "glucose")][3:] == [4.4, 4.5, 4.6]
    assert meter.racp_requests == [
        gc.racp_report_all(),
        gc.racp_report_from_seq(4),
        gc.racp_report_last(),
        gc.racp_report_all(),
    ]
    assert ingress.devices["glu-0001"].profile.resyncs == 1  # type: ignore[attr-defined]
    assert saved_watermark(tmp_path) == 3


async def test_the_watermark_only_moves_once_records_are_stored(bluez: MockBlueZ, tmp_path: Path) -> None:
    meter = bluez.add(GlucoseMeter(METER))
    for v in (5.0, 5.5, 6.0):
        meter.add_record(v)

    class NeverStores(Recorder):  # a gateway that dies before its store commits
        async def submit(self, acc, on_stored=None):
            self.accepted.append(acc)

    lost = NeverStores()
    async with running([spec("glu-0001", "glucose", METER)], tmp_path, lost) as (ingress, _):
        await wait_until(lambda: len(seqs(lost)) == 3)
        assert ingress.watermarks.get("glu-0001") is None
    again = Recorder()
    async with running([spec("glu-0001", "glucose", METER)], tmp_path, again):
        await wait_until(lambda: len(seqs(again)) == 3, what="records fetched again after the 'crash'")
    # Same records, same idempotency keys: the store keeps one copy of each.
    assert [a.idempotency_key for a in again.accepted if a.reading.kind == "glucose"] == [
        a.idempotency_key for a in lost.accepted if a.reading.kind == "glucose"
    ]
    assert meter.racp_requests == [gc.racp_report_all(), gc.racp_report_all()]
    assert saved_watermark(tmp_path) == 3
