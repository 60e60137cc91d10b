"""The doctor's console in a real browser: Debian's headless Chromium driven by Playwright, against a real
Mosquitto and a real `vitalgate run`. Sign in with a doctor's account (made by `vitalgate passwd`), see a
hypertensive crisis published over MQTT appear on the page by itself, acknowledge it with a click and see
`acknowledged` by that account on MQTT; then the patient list, a patient's live ECG strip and the devices;
log out. Screenshots of each page go to tests/artifacts/screenshots/.

Playwright drives /usr/bin/chromium (`executable_path`); it never downloads a browser of its own.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from simulators.stack import free_port
from tests.support.browser import CLINIC, TOKEN, now_china, shot, wait_http
from tests.support.clinic import ecg_wave

DOCTOR, DOCTOR_PASSWORD = "李医生", "li-zhen-2026-qiao"

pytestmark = [pytest.mark.browser, pytest.mark.broker]


def _config(tmp: Path, broker_port: int, http_port: int) -> Path:
    from console.accounts import hash_password

    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        f"""\
clinic: {CLINIC}
broker: {{host: 127.0.0.1, port: {broker_port}}}
storage: {{path: {tmp / "var"}}}
status: {{interval: 1s}}
http:
  bind: 127.0.0.1
  port: {http_port}
  token: {TOKEN}
  accounts:
    - {{name: {DOCTOR}, role: doctor, password_hash: "{hash_password(DOCTOR_PASSWORD)}"}}
patients:
  - id: p-0001
    labels: {{village: dongcun}}
    devices:
      - {{id: bp-0001, kind: blood_pressure, schedule: 24h}}
      - {{id: glu-0001, kind: glucose}}
      - {{id: ecg-0001, kind: ecg}}
  - id: p-0002
    labels: {{village: xicun}}
    devices:
      - {{id: bp-0002, kind: blood_pressure}}
      - {{id: glu-0002, kind: glucose}}
""",
        encoding="utf-8",
    )
    return cfg


def _publish_history(w, now: datetime) -> None:
    topic = f"vg/{CLINIC}/device/{{}}/reading"
    rng = np.random.default_rng(7)
    for day in range(7, 0, -1):  # a normal week, then today
        ts = (now - timedelta(days=day)).replace(hour=8)
        w.publish(
            topic.format("bp-0001"),
            json.dumps(
                {
                    "kind": "blood_pressure",
                    "ts": ts.isoformat(),
                    "seq": 100 - day,
                    "systolic": int(128 + rng.integers(-6, 12)),
                    "diastolic": int(80 + rng.integers(-4, 8)),
                    "pulse": 72,
                }
            ),
        )
        w.publish(
            topic.format("glu-0001"),
            json.dumps(
                {
                    "kind": "glucose",
                    "ts": (ts + timedelta(hours=1)).isoformat(),
                    "seq": 100 - day,
                    "mmol_l": round(float(5.5 + rng.normal(0, 1.2)), 1),
                    "meal": "fasting",
                }
            ),
        )
        w.publish(
            topic.format("bp-0002"),
            json.dumps(
                {
                    "kind": "blood_pressure",
                    "ts": ts.isoformat(),
                    "seq": 100 - day,
                    "systolic": int(136 + rng.integers(-8, 8)),
                    "diastolic": int(86 + rng.integers(-4, 4)),
                    "pulse": 66,
                }
            ),
        )
    wave = np.rint(ecg_wave(20)).astype(int)
    for k in range(20):  # the patch's last 20 s
        w.publish(
            topic.format("ecg-0001"),
            json.dumps(
                {
                    "kind": "ecg",
                    "ts": (now - timedelta(seconds=20 - k)).isoformat(),
                    "seq": k,
                    "fs": 250,
                    "samples_uv": wave[k * 250 : (k + 1) * 250].tolist(),
                }
            ),
            qos=0,
        )
    w.publish(topic.format("ecg-0001"), json.dumps({"kind": "battery", "ts": now.isoformat(), "percent": 64}))


def test_doctor_sees_a_crisis_live_acknowledges_it_and_mqtt_hears_it(
    tmp_path, broker, gateway_process, watcher_factory, browser_context
):
    http = free_port()
    gw = gateway_process(_config(tmp_path, broker.port, http))
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/#"])
    wait_http(http)
    base = f"http://127.0.0.1:{http}"
    now = now_china()
    _publish_history(w, now)

    page = browser_context.new_page()
    page.goto(base + "/")
    assert "/login" in page.url  # nothing without signing in
    page.fill("#name", DOCTOR)
    page.fill("#password", DOCTOR_PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#live.on", timeout=10_000)  # the event stream is connected
    page.evaluate("window.__stillHere = true")  # proves the alert arrives without a reload

    # A confirmed crisis: two readings >= 180/110 two minutes apart (device time).
    topic = f"vg/{CLINIC}/device/bp-0001/reading"
    for seq, (ts, s, d) in enumerate([(now - timedelta(minutes=2), 186, 116), (now, 191, 118)]):
        w.publish(
            topic,
            json.dumps(
                {
                    "kind": "blood_pressure",
                    "ts": ts.isoformat(),
                    "seq": 200 + seq,
                    "systolic": s,
                    "diastolic": d,
                    "pulse": 96,
                    "unit": "mmHg",
                }
            ),
        )
    _, fired = w.wait_for(lambda t, b: t.endswith("/alert/township") and b.get("condition") == "bp_crisis")
    row = page.locator(f'tr.alert[data-alert-id="{fired["alert_id"]}"]').first
    row.wait_for(timeout=10_000)
    assert page.evaluate("window.__stillHere") is True
    assert "高血压危象" in row.inner_text() and "待处理" in row.inner_text()
    # Something at the village tier too, for a fuller page: a low glucose for p-0002.
    w.publish(
        f"vg/{CLINIC}/device/glu-0002/reading",
        json.dumps({"kind": "glucose", "ts": now.isoformat(), "seq": 300, "mmol_l": 3.5, "meal": "casual"}),
    )
    page.locator("tr.alert", has_text="低血糖").first.wait_for(timeout=10_000)
    shots = [shot(page, "1-alerts")]

    row.locator("button.ack").click()
    _, acked = w.wait_for(lambda t, b: b.get("alert_id") == fired["alert_id"] and b.get("state") == "acknowledged")
    assert acked["acknowledged_by"] == "李医生"
    page.locator(f'tr.alert[data-alert-id="{fired["alert_id"]}"][data-state="acknowledged"]').first.wait_for(
        timeout=10_000
    )

    page.click("#nav-patients")
    page.wait_for_selector("#patients tr[data-patient='p-0001']")
    assert "191/118" in page.inner_text("#patients")
    shots.append(shot(page, "2-patients"))

    page.click("#patients a[href='/patients/p-0001']")
    page.wait_for_selector("#ecg-live svg.ecg polyline", timeout=10_000)
    assert page.locator("svg.chart").count() >= 2  # BP and glucose trends
    shots.append(shot(page, "3-patient-p-0001"))

    page.click("#nav-devices")
    page.wait_for_selector("#devices tr[data-device='ecg-0001']")
    assert "64%" in page.inner_text("#devices tr[data-device='ecg-0001']")
    shots.append(shot(page, "4-devices"))

    page.click("#lang-switch")
    page.wait_for_selector("text=Devices")
    page.goto(base + f"/alerts/{fired['alert_id']}")
    assert "Hypertensive crisis" in page.inner_text("h1") and "李医生" in page.inner_text("#trail")
    shots.append(shot(page, "5-alert-detail-en"))

    # Logging out ends the session on the server: the same cookie, put back, opens nothing.
    cookies = browser_context.cookies(base)
    page.click("#logout")
    page.wait_for_selector("#login-submit")
    browser_context.add_cookies(cookies)
    page.goto(base + "/")
    assert "/login" in page.url

    # The gateway stops cleanly with a page still listening to its event stream.
    page.fill("#name", DOCTOR)
    page.fill("#password", DOCTOR_PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#live.on")
    assert gw.stop() == 0
    assert all(p.stat().st_size > 10_000 for p in shots)
