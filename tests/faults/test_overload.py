"""Past capacity (issue 19 item 4), through a real Mosquitto and `vitalgate run`.

A flood of ECG frames, far more than the analysis takes in real time, with a severe hypoglycaemia
in the middle: the glucose alert comes at once (the critical lane never waits behind the frames),
the box says its ECG analysis is behind (`ecg_analysis_lagging`, with the lag in seconds), and once
the flood is over every frame it acknowledged is stored and analysed, also across a SIGKILL.

Correctness, not speed: the bounds are generous; the figures are bench/load.py's.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta

import pytest

from shards.ecg_cursor import EcgCursor
from stream.models import CHINA_TZ
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

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CRITICAL_WITHIN_S = 10.0
IN_PROCESS = "{ecg_lag_warn: 500ms, workers: 0}"  # the analysis in the gateway's own event loop
WORKERS = "{ecg_lag_warn: 500ms, workers: 2}"  # in two worker processes (shards/ecg_shards.py)


@pytest.mark.parametrize("shards", [IN_PROCESS, WORKERS], ids=["in-process", "2-workers"])
def test_an_ecg_flood_neither_delays_a_critical_reading_nor_loses_an_acknowledged_frame(
    tmp_path, broker, gateway_process, watcher_factory, shards
):
    gw = gateway_process(write_config(tmp_path, broker.port, shards))
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/alert/+", f"vg/{CLINIC}/status"])
    w.wait_for(lambda t, b: t.endswith("/status") and b.get("online") is True, timeout=30)
    flood = Flood(broker.port).start()
    try:
        assert flood.third.wait(60)
        # The meter is another device: its own connection. Its reading waits for nothing but the broker.
        ts = datetime.now(CHINA_TZ).replace(microsecond=0) - timedelta(seconds=5)
        t0 = time.monotonic()
        w.publish(
            f"vg/{CLINIC}/device/glu-0001/reading",
            json.dumps({"kind": "glucose", "ts": ts.isoformat(), "seq": 1, "mmol_l": 2.4}),
        )
        w.wait_for(
            lambda t, b: b.get("condition") == "hypoglycemia_severe" and b.get("state") == "firing",
            timeout=CRITICAL_WITHIN_S,
            prefix=f"vg/{CLINIC}/alert/",
        )
        critical_after = time.monotonic() - t0
        assert flood.published.wait(180), "the flood was not acknowledged by the broker"
    finally:
        flood.close()
    frames = PATCHES * SECONDS
    final = wait_until(caught_up(w, frames), 240, "the ECG analysis to catch up")
    seen = statuses(w)
    worst = max(s["ecg_analysis"]["lag_s"] for s in seen)
    print(
        f"\nsevere hypoglycaemia alert {critical_after * 1000:.0f} ms after its reading; ECG analysis up to "
        f"{worst:.1f} s behind; {final['ecg_analysis']['analysed_frames']} frames analysed"
    )
    assert any(s["ecg_analysis"]["condition"] == "ecg_analysis_lagging" for s in seen), (
        "the box never said its ECG analysis was behind"
    )
    assert worst >= 0.5
    assert final["ecg_analysis"]["analysed_frames"] == frames  # each stored frame analysed once, none skipped
    assert final["counters"]["accepted"]["ecg"] == frames
    assert ecg_frames_stored(tmp_path / "var") == frames
    assert gw.stop(signal.SIGTERM) == 0
    log = gw.output()
    assert "ECG analysis is" in log and "behind" in log and "caught up" in log


def test_frames_acknowledged_but_not_yet_analysed_when_the_gateway_is_killed_are_analysed_after_the_restart(
    tmp_path, broker, gateway_process, watcher_factory
):
    cfg = write_config(tmp_path, broker.port, WORKERS)
    gw = gateway_process(cfg)
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/status"])
    w.wait_for(lambda t, b: t.endswith("/status") and b.get("online") is True, timeout=30)
    flood = Flood(broker.port).start()
    try:
        # Killed while frames it has acknowledged (stored) still wait for the analysis.
        behind = wait_until(
            lambda: next((s for s in reversed(statuses(w)) if s["ecg_analysis"]["backlog_frames"] >= 500), None),
            120,
            "a backlog of stored frames not yet analysed",
        )
        gw.stop(signal.SIGKILL)
        # what the killed gateway had durably analysed (its status, up to a second older, may say less)
        cursor = EcgCursor(tmp_path / "var")
        upto_at_kill = max(cursor.load().values(), default=0)
        cursor.close()
        # Its workers see their stdin close and go too: no orphan keeps analysing.
        orphans = [p for p in behind["ecg_analysis"]["worker_pids"] if p]
        wait_until(lambda: not any(alive(p) for p in orphans), 15, "the killed gateway's workers to exit")
        again = gateway_process(cfg)
        assert flood.published.wait(180)
    finally:
        flood.close()
    frames = PATCHES * SECONDS
    final = wait_until(caught_up(w, frames), 240, "the restarted gateway's ECG analysis to catch up")
    assert ecg_frames_stored(tmp_path / "var") == frames  # the broker redelivered what was not acknowledged
    # The restarted analysis went on from its durable position to the end: the frames it did not analyse
    # are at most those the saved positions covered (frame rowids run 1..frames)
    assert final["ecg_analysis"]["analysed_frames"] >= frames - upto_at_kill
    assert again.stop(signal.SIGTERM) == 0
