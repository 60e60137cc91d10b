"""AF screening from MQTT to the doctor's screening page, in a real browser (Debian's headless Chromium driven by
Playwright, as tests/browser/test_web_browser.py), against a real Mosquitto and a real `vitalgate run`.

A village doctor's handheld publishes a real AF strip (CinC 2017 A00972, 60 s at 300 Hz) as one message; the
screening page, already open, shows it by itself on the referral list labelled 房颤 with its strip on ECG paper;
the result is republished on the patient's reading topic without the samples and no alert is raised; the doctor
marks it referred and it moves to the referred list with her name. A noisy strip asks for a retake.
Screenshots go to tests/artifacts/screenshots/ (6-screening.png, 7-screening-strip.png).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from simulators.stack import free_port
from stream.ecg.evaluation import read_record
from tests.support.browser import CLINIC, TOKEN, now_china, shot, wait_http
from tests.support.paths import ECG_SLICES

STRIPS = ECG_SLICES / "challenge2017"

pytestmark = [pytest.mark.browser, pytest.mark.broker]


def _config(tmp: Path, broker_port: int, http_port: int) -> Path:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        f"""\
clinic: {CLINIC}
broker: {{host: 127.0.0.1, port: {broker_port}}}
storage: {{path: {tmp / "var"}}}
status: {{interval: 1s}}
http: {{bind: 127.0.0.1, port: {http_port}, token: {TOKEN}}}
patients:
  - id: p-0001
    devices:
      - {{id: bp-0001, kind: blood_pressure}}
      - {{id: hh-0001, kind: ecg_handheld}}
  - id: p-0002
    devices:
      - {{id: ecg-0002, kind: ecg}}
""",
        encoding="utf-8",
    )
    return cfg


def _strip(name: str, strip_id: str) -> str:
    r = read_record(str(STRIPS / name))
    return json.dumps(
        {
            "kind": "ecg_strip",
            "strip_id": strip_id,
            "ts": now_china().isoformat(),
            "fs": r.fs,
            "lead": "I",
            "samples_uv": np.rint(r.signal_uv).astype(int).tolist(),
        }
    )


def test_a_strip_from_mqtt_reaches_the_referral_list_labelled_af_and_is_marked_referred(
    tmp_path, broker, gateway_process, watcher_factory, browser_context
):  # noqa: F811
    http = free_port()
    gw = gateway_process(_config(tmp_path, broker.port, http))
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/#"])
    wait_http(http)
    base = f"http://127.0.0.1:{http}"

    page = browser_context.new_page()
    page.goto(base + "/screening")
    page.fill("#name", "王医生")
    page.fill("#password", TOKEN)
    page.click("#login-submit")
    page.wait_for_selector("#no-referrals")  # nobody waits yet
    page.evaluate("window.__stillHere = true")  # proves the strip arrives without a reload

    t0 = time.monotonic()
    w.publish(f"vg/{CLINIC}/device/hh-0001/reading", _strip("A00972", "hh-0001-20261120-0001"))
    _, result = w.wait_for(lambda t, b: t == f"vg/{CLINIC}/patient/p-0001/reading" and b.get("kind") == "ecg_strip")
    assert result["label"] == "af" and result["strip_id"] == "hh-0001-20261120-0001" and "samples_uv" not in result
    assert result["device_id"] == "hh-0001" and result["model"] == "screen-v5" and result["confidence"] > 0.9

    row = page.locator('#referral-list tr.strip[data-label="af"]').first
    row.wait_for(timeout=15_000)  # the page refreshes its lists every 5 s
    seen_after = time.monotonic() - t0
    assert page.evaluate("window.__stillHere") is True
    assert "房颤" in row.inner_text() and "p-0001" in row.inner_text()
    key = row.get_attribute("data-strip")
    paper = page.locator(f'#referral-list tr[data-strip-paper="{key}"] img')
    paper.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=paper.element_handle(), timeout=10_000)
    # a noisy strip from the other patient's patch: today's list asks for a retake
    w.publish(f"vg/{CLINIC}/device/ecg-0002/reading", _strip("A01070", "ecg-0002-noisy-1"))
    page.locator("#strips-today tr.strip[data-label='noisy']", has_text="请重新采集").first.wait_for(timeout=15_000)
    shots = [shot(page, "6-screening")]

    page.locator(f'#referral-list tr.strip[data-strip="{key}"] button.refer').click()
    done = page.locator(f'#referred-list tr.strip[data-strip="{key}"]')
    done.wait_for(timeout=10_000)
    assert "王医生" in done.inner_text() and "已转诊" in done.inner_text()
    assert page.locator(f'#referral-list tr.strip[data-strip="{key}"]').count() == 0
    page.wait_for_selector("#no-referrals")

    page.goto(f"{base}/screening/{key}")
    page.wait_for_selector("#strip-paper svg.ecg-paper polyline")
    assert page.locator("#strip-paper svg.ecg-paper polyline").count() == 6  # 60 s: six rows of 10 s
    assert "王医生" in page.inner_text("#strip-details")
    shots.append(shot(page, "7-screening-strip"))

    # not an alert: nothing on any tier topic
    assert not [t for t, _ in w.json(f"vg/{CLINIC}/alert/")]
    assert gw.stop() == 0
    assert all(p.stat().st_size > 10_000 for p in shots)
    print(f"strip on the referral list {seen_after:.1f} s after it was published")
