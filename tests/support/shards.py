"""Helpers for the capacity tests (tests/faults/test_overload.py, tests/faults/test_shards_workers.py): a config with
many patches, an ECG flood over one MQTT connection, the gateway's status as the test reads it."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt

from simulators.ecg_synthesis import EcgSynth
from stream.models import CHINA_TZ

CLINIC = "c1"
PATCHES = 60
SECONDS = 150  # frames per patch: 9,000 in all, a few seconds of analysis on this machine


def write_config(tmp: Path, port: int, shards: str = "{ecg_lag_warn: 500ms}") -> Path:
    """p-0001 has a glucose meter and a patch; p-0002..p-0060 a patch each."""
    patches = "\n".join(
        f"  - {{id: p-{i:04d}, devices: [{{id: ecg-{i:04d}, kind: ecg}}]}}" for i in range(2, PATCHES + 1)
    )
    cfg = tmp / "gateway.yaml"
    cfg.write_text(f"""\
clinic: {CLINIC}
broker: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {tmp / "var"}}}
status: {{interval: 1s}}
shards: {shards}
patients:
  - id: p-0001
    devices:
      - {{id: glu-0001, kind: glucose}}
      - {{id: ecg-0001, kind: ecg}}
{patches}
""")
    return cfg


class Flood:
    """The patches: one paho connection, QoS 1, a second's frames of every patch together, as fast as
    the broker takes them. `rhythms`: patch number -> (from s, to s, rhythm) of a stretch to inject."""

    def __init__(self, port: int, rhythms: dict[int, tuple[int, int, str]] | None = None) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="patches")
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        base = datetime.now(CHINA_TZ) - timedelta(seconds=SECONDS + 60)
        synths = [EcgSynth(250, seed=i) for i in range(PATCHES)]
        self.payloads: list[tuple[str, str]] = []
        for s in range(SECONDS):
            for k in range(PATCHES):
                inject = (rhythms or {}).get(k + 1)
                synths[k].rhythm = inject[2] if inject and inject[0] <= s < inject[1] else "sinus"
                body = {
                    "kind": "ecg",
                    "ts": (base + timedelta(seconds=s)).isoformat(),
                    "seq": s + 1,
                    "fs": 250,
                    "samples_uv": [int(v) for v in synths[k].frame()],
                }
                self.payloads.append((f"vg/{CLINIC}/device/ecg-{k + 1:04d}/reading", json.dumps(body)))
        self.published = threading.Event()
        self.third = threading.Event()

    def start(self) -> Flood:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
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


def statuses(w) -> list[dict]:
    """The gateway's online statuses so far, oldest first (a Watcher on vg/{clinic}/status)."""
    return [b for t, b in w.json(f"vg/{CLINIC}/status") if b.get("online") and "ecg_analysis" in b]


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def caught_up(w, frames: int):
    """A status saying every stored frame is analysed (all `frames` of them) and the lag is over."""

    def check():
        for s in reversed(statuses(w)):
            e = s["ecg_analysis"]
            return s if e["backlog_frames"] == 0 and e["analysed_upto"] >= frames and e["condition"] is None else None
        return None

    return check


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
