"""Binary vendor ECG frames over MQTT (issue 19 item 3; docs/vendor_ecg.md § Over MQTT), end to end.

Through a real Mosquitto and `vitalgate run`: two patches send the same synthetic ECG (sinus, then
ventricular tachycardia), one as JSON on `.../reading`, the other as vendor frames on
`.../gatt/5a7e0003`, in real time (a vendor frame carries no time: the gateway stamps it on arrival
and counts on). Malformed binary frames sent between the good ones are rejected with their reason
and counted, and cost the good ones nothing. Both streams are stored with the same samples, and the
ECG analysis raises VT on both at the same point of the stream.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import zlib
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from gateway.gatt_codecs import encode_vendor_ecg_frame
from simulators.ecg_synthesis import EcgSynth
from stream.models import CHINA_TZ
from tests.support.shards import wait_until

CLINIC = "c1"
SINUS_S, VT_S = 5, 5  # VT is flagged 2-3 s into the run (stream/ecg/rhythms.py)
# second -> a malformed frame sent just before that second's good one, and the reason the gateway gives
MALFORMED = {
    2: (lambda good: good[:-1], "header announces 250 samples"),  # truncated by the proxy
    5: (lambda good: b"\x02" + good[1:], "format version 2"),  # a future format
    7: (lambda good: good[:1] + b"\x80" + good[2:], "reserved flag bits"),
}


def _config(tmp: Path, port: int) -> Path:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(f"""\
clinic: {CLINIC}
broker: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {tmp / "var"}}}
status: {{interval: 1s}}
shards: {{workers: 1}}
patients:
  - id: p-0001
    devices: [{{id: ecg-json, kind: ecg}}]
  - id: p-0002
    devices: [{{id: ecg-bin, kind: ecg}}]
""")
    return cfg


def _stored(storage: Path, device: str) -> list[tuple[datetime, np.ndarray]]:
    con = sqlite3.connect(f"file:{storage / 'readings.db'}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT device_ts, samples_uv FROM ecg_frames WHERE device_id = ? ORDER BY device_ts", (device,)
        ).fetchall()
    finally:
        con.close()
    return [(datetime.fromisoformat(ts), np.frombuffer(zlib.decompress(blob), dtype="<i4")) for ts, blob in rows]


def _status(w) -> dict:
    online = [b for _, b in w.json(f"vg/{CLINIC}/status") if b.get("online")]
    return online[-1] if online else {}


@pytest.mark.broker
@pytest.mark.slow
def test_binary_frames_are_stored_and_analysed_as_the_json_frames_with_the_same_samples(
    tmp_path, broker, gateway_process, watcher_factory
):
    gw = gateway_process(_config(tmp_path, broker.port))
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/status", f"vg/{CLINIC}/alert/+"])
    wait_until(lambda: _status(w), 30, "the gateway online")

    synth = EcgSynth(250, seed=11)
    frames: list[list[int]] = []
    for k in range(SINUS_S + VT_S):
        synth.rhythm = "sinus" if k < SINUS_S else "vt"
        frames.append([int(v) for v in np.clip(synth.frame(), -32768, 32767)])

    start = datetime.now(CHINA_TZ)
    t0 = time.monotonic()
    for k, samples in enumerate(frames):
        good = encode_vendor_ecg_frame(k + 1, 250, 1.0, False, np.array(samples))
        if k in MALFORMED:
            w.publish(f"vg/{CLINIC}/device/ecg-bin/gatt/5a7e0003", MALFORMED[k][0](good))
        w.publish(f"vg/{CLINIC}/device/ecg-bin/gatt/5a7e0003", good)
        w.publish(
            f"vg/{CLINIC}/device/ecg-json/reading",
            json.dumps(
                {
                    "kind": "ecg",
                    "ts": (start + timedelta(seconds=k)).isoformat(),
                    "seq": k + 1,
                    "fs": 250,
                    "samples_uv": samples,
                    "lead_off": False,
                }
            ),
        )
        time.sleep(max(0.0, t0 + k + 1 - time.monotonic()))  # real time: the patch's frames come 1 s apart

    def vt_alert(patient: str):
        return w.wait_for(
            lambda t, b: b.get("condition") == "vt" and b.get("patient_id") == patient and b.get("state") == "firing",
            timeout=30,
            prefix=f"vg/{CLINIC}/alert/",
        )[1]

    vt_json, vt_bin = vt_alert("p-0001"), vt_alert("p-0002")
    n = len(frames)
    final = wait_until(
        lambda: (
            (s := _status(w))
            and s["counters"]["accepted"].get("ecg") == 2 * n
            and s["ecg_analysis"]["backlog_frames"] == 0
            and s
        ),
        30,
        "every frame stored and analysed",
    )
    assert final["counters"]["rejected"].get("malformed_gatt") == len(MALFORMED)
    reasons = [r for r in final["last_rejections"] if r["device_id"] == "ecg-bin"]
    assert [r["reason"] for r in reasons] == ["malformed_gatt"] * len(MALFORMED)
    for r, (_, why) in zip(reasons, MALFORMED.values()):
        assert why in r["detail"], r
    assert gw.stop(signal.SIGTERM) == 0

    via_json, via_bin = _stored(tmp_path / "var", "ecg-json"), _stored(tmp_path / "var", "ecg-bin")
    assert len(via_json) == len(via_bin) == n
    for (_, a), (_, b), sent in zip(via_json, via_bin, frames):
        assert a.tolist() == b.tolist() == sent
    # Stamped on arrival, then counted: 1 s apart exactly, as the patch recorded them
    assert [ts - via_bin[0][0] for ts, _ in via_bin] == [timedelta(seconds=k) for k in range(n)]
    assert abs(via_bin[0][0] - start) < timedelta(seconds=3)
    # The same samples on the same time base: the analysis flags VT with the same evidence (beats, rate,
    # quality, the strip and where it starts in the stream); only the device differs
    assert vt_json["evidence"].pop("device_id") == "ecg-json" and vt_bin["evidence"].pop("device_id") == "ecg-bin"
    assert vt_bin["evidence"] == vt_json["evidence"] and vt_bin["evidence"]["strip"]["samples_uv"]
    assert (vt_bin["tier"], vt_bin["severity"]) == (vt_json["tier"], vt_json["severity"])


@pytest.mark.broker
def test_a_frame_redelivered_after_a_restart_keeps_its_time_and_is_stored_once(
    tmp_path, broker, gateway_process, watcher_factory
):
    """A binary frame carries no time: the gateway gives it one. A frame stored but not acknowledged when
    the gateway died comes back from the broker after the restart; it must get the time it was stored
    with (so the same key) and not be stored twice, and the patch's next frame goes on from there."""
    cfg = _config(tmp_path, broker.port)
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/status"])
    topic = f"vg/{CLINIC}/device/ecg-bin/gatt/5a7e0003"
    synth = EcgSynth(250, seed=3)
    frames = [
        encode_vendor_ecg_frame(k + 1, 250, 1.0, False, np.clip(synth.frame(), -32768, 32767).astype(int))
        for k in range(5)
    ]

    gw = gateway_process(cfg)
    wait_until(lambda: _status(w), 30, "the gateway online")
    for f in frames[:4]:
        w.publish(topic, f)
    wait_until(lambda: len(_stored(tmp_path / "var", "ecg-bin")) == 4, 30, "four frames stored")
    assert gw.stop(signal.SIGTERM) == 0
    before = _stored(tmp_path / "var", "ecg-bin")

    gw = gateway_process(cfg)
    wait_until(lambda: _status(w).get("online"), 30, "the gateway back")
    w.publish(topic, frames[3])  # as the broker redelivers a frame whose PUBACK never went out
    w.publish(topic, frames[4])  # the patch's next frame
    wait_until(lambda: len(_stored(tmp_path / "var", "ecg-bin")) >= 5, 30, "the next frame stored")
    time.sleep(1.0)  # room for a duplicate to show up
    assert gw.stop(signal.SIGTERM) == 0
    after = _stored(tmp_path / "var", "ecg-bin")
    assert len(after) == 5, [ts for ts, _ in after]
    assert [ts for ts, _ in after[:4]] == [ts for ts, _ in before]
    assert after[4][0] - after[3][0] == timedelta(seconds=1)  # counted on from where the stream stopped
