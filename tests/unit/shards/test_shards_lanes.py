"""The critical lane and the ECG lane (shards/, issue 19 items 1 and 4), without a broker.

The subscriptions split the device topics by configured kind; the ECG lane stores and acknowledges a
frame only after its commit and keeps arrival order; the ECG analysis reads the committed frames back
in that order, keeps a durable position, goes on from it after a crash, and says how far behind it is.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from gateway.gatt_codecs import encode_vendor_ecg_frame
from gateway.ingress import DeviceBinding, DeviceRegistry
from outbound.store_and_forward import StoreAndForward
from shards.ecg_analysis import LAGGING, EcgAnalysis, LagWatch
from shards.ecg_cursor import EcgCursor
from shards.ecg_lane import EcgLane
from shards.lanes import device_of, subscriptions
from stream.core import Counters, StreamCore
from stream.models import CHINA_TZ, Accepted, DeviceKind, EcgFrame, Finding
from stream.store import ReadingStore
from stream.thresholds import Thresholds

NOW = datetime.now(CHINA_TZ).replace(microsecond=0)
PREFIX = "vg/c1"


def test_the_critical_session_names_each_critical_device_and_the_ecg_session_takes_the_wildcards():
    lanes = subscriptions(PREFIX, ["glu-1", "bp-1"], ["snooze", "silence"])
    assert lanes.critical == [
        "vg/c1/ack",
        "vg/c1/snooze",
        "vg/c1/silence",
        "vg/c1/device/bp-1/reading",
        "vg/c1/device/bp-1/gatt/+",
        "vg/c1/device/glu-1/reading",
        "vg/c1/device/glu-1/gatt/+",
    ]
    assert lanes.ecg == ["vg/c1/device/+/reading", "vg/c1/device/+/gatt/+"]
    assert lanes.stale == lanes.ecg  # the one-session gateway's filters, dropped from the critical session
    assert device_of("vg/c1/device/ecg-7/reading", PREFIX) == "ecg-7"
    assert device_of("vg/c1/device/ecg-7/gatt/2a37", PREFIX) == "ecg-7"
    assert device_of("vg/c1/ack", PREFIX) is None and device_of("vg/c2/device/x/reading", PREFIX) is None


def _frame_json(seq: int, samples: list[int] | None = None) -> bytes:
    ts = (NOW - timedelta(minutes=5) + timedelta(seconds=seq)).isoformat()
    return json.dumps(
        {"kind": "ecg", "ts": ts, "seq": seq, "fs": 250, "samples_uv": samples if samples is not None else [seq] * 250}
    ).encode()


class Lane:
    """The ECG lane over a real reading store (the gateway's StoreAndForward, committed once per tick)."""

    def __init__(self, storage: Path) -> None:
        self.store = ReadingStore(storage)
        self.forwarding = StoreAndForward(self.store, storage, reserve_bytes=0)
        self.counters = Counters()

        async def nothing(_x):
            return None

        self.core = StreamCore(
            self.forwarding, {}, Thresholds(), nothing, nothing, self.counters, ecg=_NoAnalysis(), clock=lambda: NOW
        )
        registry = DeviceRegistry(
            [
                DeviceBinding("ecg-1", "p-1", DeviceKind.ECG),
                DeviceBinding("ecg-2", "p-2", DeviceKind.ECG),
                DeviceBinding("glu-1", "p-1", DeviceKind.GLUCOSE),
            ]
        )
        self.committed = 0

        def on_committed() -> None:
            self.committed += 1

        self.lane = EcgLane(
            PREFIX, registry, {"glu-1"}, self.core, self.forwarding, self.counters, on_committed, clock=lambda: NOW
        )

    def close(self) -> None:
        self.store.close()


class _NoAnalysis:
    def push(self, patient_id, device_id, frame):
        return [], None, []


async def test_the_ecg_lane_acknowledges_a_frame_only_after_its_commit_in_arrival_order(tmp_path):
    lane = Lane(tmp_path)
    acked: list[str] = []
    seen_in_db_at_ack: list[int] = []

    def acker(name: str):
        def ack() -> None:
            # Whatever is acknowledged is on disk already (another connection sees it).
            n = ReadingStore(tmp_path).counts()["ecg_frames"]
            seen_in_db_at_ack.append(n)
            acked.append(name)

        return ack

    for seq in range(1, 6):
        await lane.lane.on_message("vg/c1/device/ecg-1/reading", _frame_json(seq), acker(f"ecg-1/{seq}"))
    await lane.lane.on_message("vg/c1/device/glu-1/reading", b'{"kind": "glucose"}', acker("glu"))
    assert acked == ["glu"], "the critical device's message is acknowledged at once: the critical session carries it"
    await asyncio.sleep(0.05)  # the end-of-tick commit
    assert acked == ["glu", *[f"ecg-1/{s}" for s in range(1, 6)]]
    assert all(n >= 5 for n in seen_in_db_at_ack[1:])
    assert lane.committed == 5 and lane.counters.accepted["ecg"] == 5
    assert "glucose" not in lane.counters.accepted
    lane.close()


async def test_binary_frames_take_the_ecg_lane_and_are_acknowledged_after_their_commit_like_json(tmp_path):
    """The vendor frame door (gatt/5a7e0003) ends where the JSON door does: stored by the ECG lane's core,
    acknowledged after the commit, in arrival order; a malformed frame between good ones is acknowledged
    at once (nothing to store), counted with its reason, and costs the frames around it nothing."""
    lane = Lane(tmp_path)
    acked: list[str] = []
    seen_in_db_at_ack: list[int] = []

    def acker(name: str):
        def ack() -> None:
            seen_in_db_at_ack.append(ReadingStore(tmp_path).counts()["ecg_frames"])
            acked.append(name)

        return ack

    topic = "vg/c1/device/ecg-2/gatt/5a7e0003"
    for seq in range(1, 4):
        await lane.lane.on_message(
            topic, encode_vendor_ecg_frame(seq, 250, 1.0, False, np.full(250, seq)), acker(f"bin/{seq}")
        )
        if seq == 2:
            await lane.lane.on_message(topic, b"\x01\x00\x03", acker("malformed"))
    assert acked == ["malformed"] and seen_in_db_at_ack == [0]
    await asyncio.sleep(0.05)  # the end-of-tick commit
    assert acked == ["malformed", "bin/1", "bin/2", "bin/3"]
    assert all(n >= 3 for n in seen_in_db_at_ack[1:])
    assert lane.committed == 3 and lane.counters.accepted["ecg"] == 3
    assert lane.counters.rejected["malformed_gatt"] == 1
    lane.close()


class Recorder:
    """An analyser that records what it is given, in order (stands in for stream.ecg's)."""

    pushed: list[tuple[float, float]] = []

    def __init__(self, fs: float) -> None:
        self.fs = fs

    def push(self, samples_uv, *, t0_s=None, lead_off=False):
        Recorder.pushed.append((float(t0_s), float(samples_uv[0])))
        return []

    def minute_summary(self):
        return None


def _store_frames(storage: Path, device: str, seqs: range, received_at: datetime = NOW) -> None:
    store = ReadingStore(storage)
    for seq in seqs:
        frame = EcgFrame(
            ts=NOW - timedelta(minutes=5) + timedelta(seconds=seq), seq=seq, fs=250, samples_uv=[float(seq)] * 250
        )
        store.add(
            Accepted(
                reading=frame,
                patient_id="p-" + device[-1],
                device_id=device,
                received_at=received_at,
                idempotency_key=f"{device}-{seq}",
            )
        )
    store.close()


async def _run_until_caught_up(analysis: EcgAnalysis, timeout: float = 10.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(analysis.run(stop))
    await asyncio.sleep(0.05)
    await analysis.catch_up(timeout)
    stop.set()
    await task


async def test_the_analysis_reads_committed_frames_in_order_and_goes_on_from_its_durable_position(tmp_path):
    ReadingStore(tmp_path).close()
    findings: list[Finding] = []

    async def on_finding(f: Finding) -> None:
        findings.append(f)

    async def publish(acc: Accepted) -> None:
        return None

    Recorder.pushed = []
    analysis = EcgAnalysis(tmp_path, on_finding, publish, clock=lambda: NOW, analyser_factory=Recorder)
    await _run_until_caught_up(analysis)  # first start: nothing stored yet
    _store_frames(tmp_path, "ecg-1", range(1, 4))
    _store_frames(tmp_path, "ecg-2", range(1, 3))
    _store_frames(tmp_path, "ecg-1", range(4, 6))
    await _run_until_caught_up(analysis)
    analysis.close()
    assert [v for _, v in Recorder.pushed] == [1, 2, 3, 1, 2, 4, 5]  # commit order, each device in order
    assert EcgCursor(tmp_path).load() == {"in-process": 7}

    # Frames committed (and so acknowledged) while no analysis ran: analysed by the next one, once.
    _store_frames(tmp_path, "ecg-2", range(3, 6))
    Recorder.pushed = []
    again = EcgAnalysis(tmp_path, on_finding, publish, clock=lambda: NOW, analyser_factory=Recorder)
    await _run_until_caught_up(again)
    assert [v for _, v in Recorder.pushed] == [3, 4, 5]
    assert again.analysed == 3 and again.status()["backlog_frames"] == 0
    again.close()


async def test_the_analysis_says_how_far_behind_it_is(tmp_path):
    _store_frames(tmp_path, "ecg-1", range(1, 3), received_at=NOW - timedelta(seconds=30))

    async def nothing(_x):
        return None

    analysis = EcgAnalysis(tmp_path, nothing, nothing, clock=lambda: NOW, analyser_factory=Recorder)
    analysis.cursor = 0  # as if it had not started on them yet
    assert analysis.lag_s() == 30.0
    st = analysis.status()
    assert st["backlog_frames"] == 2 and st["lag_s"] == 30.0 and st["condition"] is None
    analysis.close()

    watch = LagWatch(warn_s=10.0)
    watch.update(4.0, NOW)
    assert watch.condition is None
    watch.update(12.0, NOW)
    assert watch.condition == LAGGING and watch.episodes == 1
    watch.update(6.0, NOW + timedelta(seconds=5))  # under the warning, not yet under half of it
    assert watch.condition == LAGGING
    watch.update(4.0, NOW + timedelta(seconds=9))
    assert watch.condition is None and watch.worst_s == 12.0


def test_stored_frames_keep_their_samples_for_the_analysis(tmp_path):
    _store_frames(tmp_path, "ecg-1", range(1, 2))
    from stream.store import FILE_NAME, ReadingQueries

    q = ReadingQueries(tmp_path / FILE_NAME)
    frames, upto = q.ecg_log_after(0, 10)
    assert upto == 1 and len(frames) == 1
    rowid, key, patient, device, ts, received, seq, fs, lead_off, samples = frames[0]
    assert (rowid, key, patient, device, seq, fs, lead_off) == (1, "ecg-1-1", "p-1", "ecg-1", 1, 250.0, 0)
    assert isinstance(samples, np.ndarray) and samples.dtype == np.int32 and list(samples[:3]) == [1, 1, 1]
    assert q.ecg_log_after(0, 10, patients={"p-2"}) == ([], 1)  # others' frames skipped, the position moves on
    assert q.ecg_log_head() == 1
    q.close()
