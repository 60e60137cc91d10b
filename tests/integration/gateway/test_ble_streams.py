"""Streaming devices through bleak: re-subscription after reconnects, ECG frames, Polar PMD start/stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import gatt_codecs as gc
from simulators.ble.bluez import MockBlueZ
from simulators.ble.virtual_devices import HR_MEASUREMENT, HeartRateStrap, PolarH10, VendorEcgPatch
from tests.support.ble import running, spec, wait_until  # noqa: F401  (fixture)

pytestmark = pytest.mark.ble

STRAP = "C0:26:DA:00:30:01"
PATCH = "C0:26:DA:00:30:02"
H10 = "C0:26:DA:00:30:03"


async def test_a_reconnect_resubscribes_so_notifications_keep_flowing(bluez: MockBlueZ, tmp_path: Path) -> None:
    strap = bluez.add(HeartRateStrap(STRAP, bpm=64, period_s=0.05))
    async with running([spec("hr-0001", "heart_rate", STRAP)], tmp_path) as (ingress, rec):
        await wait_until(lambda: len(rec.of("hr-0001", "heart_rate")) >= 5)
        for cycle in (1, 2):
            strap.drop_link()  # supervision timeout
            before = len(rec.of("hr-0001", "heart_rate"))
            await wait_until(lambda: ingress.devices["hr-0001"].link.status.connects == cycle + 1)
            await wait_until(
                lambda: len(rec.of("hr-0001", "heart_rate")) >= before + 5,
                what=f"notifications after reconnect {cycle}",
            )
        # bleak's BlueZ manager + the live client: no D-Bus connection left behind per reconnect.
        assert len(await bluez.bus_clients()) == 2
    assert strap.stats.connects == 3
    assert strap.stats.subscribes[HR_MEASUREMENT] == 3  # StartNotify after every connect
    hr = rec.of("hr-0001", "heart_rate")[-1].reading
    assert (hr.bpm, hr.contact, hr.rr_ms) == (64, True, [pytest.approx(937.5, abs=1)])


async def test_vendor_ecg_frames_become_one_second_ecg_readings_with_lead_off_and_gaps(
    bluez: MockBlueZ, tmp_path: Path
) -> None:
    patch = bluez.add(VendorEcgPatch(PATCH, fs=250, frame_samples=25))  # 100 ms frames
    async with running([spec("ecg-0001", "vendor_ecg", name="VG-ECG")], tmp_path) as (ingress, rec):
        await wait_until(lambda: len(rec.of("ecg-0001", "ecg")) >= 1, what="first 1 s frame")
        patch.lead_off = True
        await wait_until(lambda: any(a.reading.lead_off for a in rec.of("ecg-0001", "ecg")), what="lead-off frame")
        patch.lead_off = False
        patch.skip_frames(3)  # lost on the air
        n = len(rec.of("ecg-0001", "ecg"))
        await wait_until(lambda: len(rec.of("ecg-0001", "ecg")) >= n + 2)
        patch.push_raw(gc.VENDOR_ECG_DATA_UUID, bytes.fromhex("02 00 2a 00 fa 00 7d 00 01 00 00 00"))
        await wait_until(lambda: rec.rejected)
    frames = [a.reading for a in rec.of("ecg-0001", "ecg")]
    assert all(f.fs == 250 for f in frames)
    assert all(len(f.samples_uv) == 250 for f in frames[:-1])  # whole seconds, the last may be a remainder
    assert any(f.lead_off for f in frames) and not frames[0].lead_off
    seqs = [f.seq for f in frames]
    assert any(b - a == 2 for a, b in zip(seqs, seqs[1:])), "a lost radio frame must show as a frame-seq gap"
    assert ingress.devices["ecg-0001"].profile.gaps == 1  # type: ignore[attr-defined]
    # Consecutive frames of one stretch sit back to back on the sample-count time base.
    a, b = frames[0], frames[1]
    assert (b.ts - a.ts).total_seconds() == pytest.approx(1.0, abs=1e-6)
    assert rec.rejected[0].reason == "malformed_gatt" and "format version 2" in rec.rejected[0].detail
    assert {a.source for a in rec.accepted} == {"ble"}


async def test_polar_h10_starts_ecg_on_every_connect_and_stops_it_on_shutdown(bluez: MockBlueZ, tmp_path: Path) -> None:
    h10 = bluez.add(PolarH10(H10))
    async with running([spec("ecg-0002", "polar_h10_ecg", H10)], tmp_path) as (ingress, rec):
        await wait_until(lambda: rec.of("ecg-0002", "ecg"), what="first H10 frame")
        h10.drop_link()
        n = len(rec.of("ecg-0002", "ecg"))
        await wait_until(lambda: len(rec.of("ecg-0002", "ecg")) > n + 1, what="frames after reconnect")
        h10.contact = False  # strap off the chest: frames count as lead-off
        await wait_until(lambda: any(a.reading.lead_off for a in rec.of("ecg-0002", "ecg")))
    assert h10.commands == [gc.POLAR_PMD_START_ECG, gc.POLAR_PMD_START_ECG, gc.POLAR_PMD_STOP_ECG]
    assert not h10.streaming
    frames = [a.reading for a in rec.of("ecg-0002", "ecg")]
    assert {f.fs for f in frames} == {130.0}
    assert rec.of("ecg-0002", "heart_rate")  # 0x2A37 from the strap as well
