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
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from simulators.ecg_synthesis import EcgSynth
from stream.models import CHINA_TZ

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CLINIC = "c1"
PATCHES = 60
SECONDS = 150  # frames per patch: 9,000 in all, about 6 s of analysis on one core
CRITICAL_WITHIN_S = 10.0


def write_config(tmp: Path, port: int) -> Path:
    patches = "\n".join(f"  - {{id: p-{i:04d}, devices: [{{id: ecg-{i:04d}, kind: ecg}}]}}"
                        for i in range(2, PATCHES + 1))
    cfg = tmp / "gateway.yaml"
    cfg.write_text(f"""\
clinic: {CLINIC}
broker: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {tmp / 'var'}}}
status: {{interval: 1s}}
shards: {{ecg_lag_warn: 1s}}
patients:
  - id: p-0001
    devices:
      - {{id: glu-0001, kind: glucose}}
      - {{id: ecg-0001, kind: ecg}}
{patches}
""")
    return cfg


class Flood:
    """The patches: one paho connection, QoS 1, a second's frames of every patch together."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="patches")
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        base = datetime.now(CHINA_TZ) - timedelta(seconds=SECONDS + 60)
        synths = [EcgSynth(250, seed=i) for i in range(PATCHES)]
        self.payloads = [
            (f"vg/{CLINIC}/device/ecg-{k + 1:04d}/reading",
             json.dumps({"kind": "ecg", "ts": (base + timedelta(seconds=s)).isoformat(), "seq": s + 1, "fs": 250,
                         "samples_uv": [int(v) for v in synths[k].frame()]}))
            for s in range(SECONDS) for k in range(PATCHES)]
        self.published = threading.Event()
        self.third = threading.Event()

    def run(self) -> None:
        last = None
        for i, (topic, body) in enumerate(self.payloads):
            while True:
                last = self.client.publish(topic, body, qos=1)
                if last.rc == mqtt.MQTT_ERR_SUCCESS:
                    break
                time.sleep(0.01)  # paho's queue is full: wait for PUBACKs
            if i == len(self.payloads) // 3:
                self.third.set()
        assert last is not None
        last.wait_for_publish(60)
        self.published.set()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def ecg_frames_stored(storage: Path) -> int:
    con = sqlite3.connect(f"file:{storage / 'readings.db'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM ecg_frames").fetchone()[0]
    finally:
        con.close()


def statuses(w) -> list[dict]:  # type: ignore[no-untyped-def]
    return [b for t, b in w.json(f"vg/{CLINIC}/status") if b.get("online") and "ecg_analysis" in b]


def wait_until(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def caught_up(w, frames: int):  # type: ignore[no-untyped-def]
    """A status saying every stored frame is analysed, with all the frames stored."""
    def check():  # type: ignore[no-untyped-def]
        for s in reversed(statuses(w)):
            e = s["ecg_analysis"]
            return s if e["backlog_frames"] == 0 and e["analysed_upto"] >= frames else None
        return None
    return check


def test_an_ecg_flood_neither_delays_a_critical_reading_nor_loses_an_acknowledged_frame(
        tmp_path, broker, gateway_process, watcher_factory):
    gw = gateway_process(write_config(tmp_path, broker.port))
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/alert/+", f"vg/{CLINIC}/status"])
    w.wait_for(lambda t, b: t.endswith("/status") and b.get("online") is True, timeout=30)
    flood = Flood(broker.port)
    sender = threading.Thread(target=flood.run, daemon=True)
    sender.start()
    try:
        assert flood.third.wait(60)
        # The meter is another device: its own connection. Its reading waits for nothing but the broker.
        ts = datetime.now(CHINA_TZ).replace(microsecond=0) - timedelta(seconds=5)
        t0 = time.monotonic()
        w.publish(f"vg/{CLINIC}/device/glu-0001/reading",
                  json.dumps({"kind": "glucose", "ts": ts.isoformat(), "seq": 1, "mmol_l": 2.4}))
        w.wait_for(lambda t, b: b.get("condition") == "hypoglycemia_severe" and b.get("state") == "firing",
                   timeout=CRITICAL_WITHIN_S, prefix=f"vg/{CLINIC}/alert/")
        critical_after = time.monotonic() - t0
        assert flood.published.wait(180), "the flood was not acknowledged by the broker"
    finally:
        flood.close()
    frames = PATCHES * SECONDS
    final = wait_until(caught_up(w, frames), 240, "the ECG analysis to catch up")
    seen = statuses(w)
    worst = max(s["ecg_analysis"]["lag_s"] for s in seen)
    print(f"\nsevere hypoglycaemia alert {critical_after * 1000:.0f} ms after its reading; ECG analysis up to "
          f"{worst:.1f} s behind; {final['ecg_analysis']['analysed_frames']} frames analysed")
    assert any(s["ecg_analysis"]["condition"] == "ecg_analysis_lagging" for s in seen), \
        "the box never said its ECG analysis was behind"
    assert worst >= 1.0
    assert final["ecg_analysis"]["condition"] is None or final["ecg_analysis"]["lag_s"] < 1.0
    assert final["ecg_analysis"]["analysed_frames"] == frames  # each stored frame analysed once, none skipped
    assert final["counters"]["accepted"]["ecg"] == frames
    assert ecg_frames_stored(tmp_path / "var") == frames
    assert gw.stop(signal.SIGTERM) == 0
    log = gw.output()
    assert "ECG analysis is" in log and "behind" in log and "caught up" in log


def test_frames_acknowledged_but_not_yet_analysed_when_the_gateway_is_killed_are_analysed_after_the_restart(
        tmp_path, broker, gateway_process, watcher_factory):
    cfg = write_config(tmp_path, broker.port)
    gw = gateway_process(cfg)
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/status"])
    w.wait_for(lambda t, b: t.endswith("/status") and b.get("online") is True, timeout=30)
    flood = Flood(broker.port)
    sender = threading.Thread(target=flood.run, daemon=True)
    sender.start()
    try:
        # Killed while frames it has acknowledged (stored) still wait for the analysis.
        behind = wait_until(lambda: next((s for s in reversed(statuses(w))
                                          if s["ecg_analysis"]["backlog_frames"] >= 500), None), 120,
                            "a backlog of stored frames not yet analysed")
        gw.stop(signal.SIGKILL)
        upto_at_kill = behind["ecg_analysis"]["analysed_upto"]
        again = gateway_process(cfg)
        assert flood.published.wait(180)
    finally:
        flood.close()
    frames = PATCHES * SECONDS
    final = wait_until(caught_up(w, frames), 240, "the restarted gateway's ECG analysis to catch up")
    assert ecg_frames_stored(tmp_path / "var") == frames  # the broker redelivered what was not acknowledged
    # The restarted analysis went on from its durable position (at most a second before the kill's) to the end.
    assert final["ecg_analysis"]["analysed_frames"] >= frames - upto_at_kill
    assert again.stop(signal.SIGTERM) == 0
