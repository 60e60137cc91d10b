"""ECG analysis in worker processes (issue 19 item 2): a SIGKILLed worker is restarted and loses nothing.

Through a real Mosquitto and `vitalgate run` with two workers: one worker is SIGKILLed a third of the
way into a flood, while frames it has not analysed yet are acknowledged and stored; a stretch of
asystole on one of its patients comes after the kill. The supervisor restarts the worker from its
last position, the asystole alarm is raised, and every stored frame is analysed.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from shards.ecg_worker import ShardOf
from tests.support.shards import (
    CLINIC,
    PATCHES,
    SECONDS,
    Flood,
    alive,
    caught_up,
    ecg_frames_stored,
    statuses,
    wait_until,
    write_config,
)


def test_patients_are_spread_over_the_shards_the_same_way_in_every_process():
    ids = [f"p-{i:04d}" for i in range(1, 2001)]
    two = [ShardOf(0, 2), ShardOf(1, 2)]
    counts = [sum(1 for p in ids if p in s) for s in two]
    assert sum(counts) == len(ids) and min(counts) > 0.45 * len(ids)  # each patient in exactly one, balanced
    assert all(("p-0007" in ShardOf(k, 2)) == ("p-0007" in two[k]) for k in range(2))  # stable: crc32, not hash()
    with pytest.raises(ValueError):
        ShardOf(2, 2)


@pytest.mark.broker
@pytest.mark.faults
@pytest.mark.slow
def test_a_sigkilled_worker_is_restarted_and_nothing_it_had_acknowledged_is_lost(
    tmp_path, broker, gateway_process, watcher_factory
):
    cfg = write_config(tmp_path, broker.port, "{workers: 2, ecg_lag_warn: 500ms}")
    gw = gateway_process(cfg)
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/status", f"vg/{CLINIC}/alert/+"])
    first = wait_until(
        lambda: next((s for s in reversed(statuses(w)) if all(s["ecg_analysis"]["worker_pids"])), None),
        30,
        "both workers running",
    )
    victim_patch = 2  # p-0002: 20 s of asystole, sent after the kill
    shard = next(k for k in range(2) if "p-0002" in ShardOf(k, 2))
    victim = first["ecg_analysis"]["worker_pids"][shard]
    flood = Flood(broker.port, rhythms={victim_patch: (60, 80, "asystole")}).start()
    try:
        assert flood.third.wait(60)
        os.kill(victim, signal.SIGKILL)  # mid-stream: frames of its patients stored and acked, not yet analysed
        killed_at = time.monotonic()
        assert flood.published.wait(180)
    finally:
        flood.close()
    frames = PATCHES * SECONDS
    final = wait_until(caught_up(w, frames), 240, "the ECG analysis to catch up after the restart")
    e = final["ecg_analysis"]
    assert e["restarts"] >= 1 and e["worker_pids"][shard] not in (None, victim) and not alive(victim)
    assert e["analysed_frames"] >= frames  # frames after the dead worker's last position are analysed again
    assert ecg_frames_stored(tmp_path / "var") == frames and final["counters"]["accepted"]["ecg"] == frames
    # The asystole came after the kill, on the killed worker's patient: its successor found it.
    w.wait_for(
        lambda t, b: (
            b.get("condition") == "asystole" and b.get("patient_id") == "p-0002" and b.get("state") == "firing"
        ),
        timeout=30,
        prefix=f"vg/{CLINIC}/alert/",
    )
    assert f"ECG worker {shard + 1} of 2 stopped (signal 9)" in gw.output()
    print(
        f"\nworker {shard + 1} SIGKILLed; caught up {time.monotonic() - killed_at:.1f} s later, "
        f"{e['analysed_frames']} frames analysed for {frames} stored"
    )
    pids = [p for p in e["worker_pids"] if p]
    assert gw.stop(signal.SIGTERM) == 0
    assert not any(alive(p) for p in pids), "a worker outlived the gateway's clean stop"
