"""The county page in a real browser (Debian's headless Chromium driven by Playwright, as tests/browser/test_web_browser.py)
against a real 3-node NATS JetStream cluster and `vitalgate county`.

Two clinics uplink: "xl" through a server's MQTT listener (listening on its ack topic as a gateway there does)
and "sm" natively. The page lists their alerts with the emergency and county tiers first; a click on 确认
publishes the acknowledgement down to the clinic (it arrives on `vg/xl/ack`, and through the native uplink's
control consumer for "sm"); the weekly figures per village and per clinic (BP control rate, AF found) draw,
and the downloaded report has them. Screenshot: tests/artifacts/screenshots/8-county.png.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from stream.models import CHINA_TZ
from tests.support.browser import shot
from tests.support.county import TOKEN, CountyProcess, MqttClinic, NativeClinic, NatsCluster, kill_leftovers

pytestmark = [pytest.mark.browser, pytest.mark.broker, pytest.mark.county, pytest.mark.slow]

WHO = "县中心-张医生"


@pytest.fixture
def cluster(tmp_path: Path):
    (tmp_path / "cluster").mkdir()
    c = NatsCluster(tmp_path / "cluster")
    yield c
    kill_leftovers()
    c.stop()


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def _bp(clinic: str, patient: str, values: list[tuple[int, int]], now: datetime) -> list[tuple[str, str, str]]:
    rows = []
    for i, (s, d) in enumerate(values):
        ts = _iso(now - timedelta(hours=12 * (i + 1)))
        body = {
            "kind": "blood_pressure",
            "ts": ts,
            "seq": i,
            "systolic": s,
            "diastolic": d,
            "pulse": 72,
            "unit": "mmHg",
            "status": {
                "body_movement": False,
                "irregular_pulse": False,
                "cuff_loose": False,
                "improper_position": False,
            },
            "patient_id": patient,
            "device_id": f"bp-{patient}",
            "received_at": ts,
        }
        rows.append((f"bp-{patient}-{i}", f"vg/{clinic}/patient/{patient}/reading", json.dumps(body)))
    return rows


def _alert(clinic: str, n: int, patient: str, tier: str, condition: str, now: datetime) -> tuple[str, str]:
    opened = _iso(now - timedelta(minutes=10 * n))
    body = {
        "alert_id": f"{clinic}-a{n}",
        "patient_id": patient,
        "clinic": clinic,
        "tier": tier,
        "condition": condition,
        "severity": "critical" if tier == "emergency" else "high",
        "state": "firing",
        "opened_at": opened,
        "updated_at": opened,
        "escalated_from": None,
        "acknowledged_by": None,
    }
    return f"vg/{clinic}/alert/{tier}", json.dumps(body)


def test_the_county_page_puts_urgent_alerts_first_acks_down_to_the_clinic_and_draws_the_weekly_figures(
    cluster: NatsCluster, tmp_path: Path, browser_context
) -> None:  # noqa: F811
    t0 = time.monotonic()
    county = CountyProcess(cluster.config_path)
    county.wait_for(lambda: county.health()["ready"] and len(county.health()["partitions"]) == 8, what="ready")
    now = datetime.now(CHINA_TZ)

    # Clinic xl on a server's MQTT listener, as today's gateway: its status lists its patients by village.
    xl = MqttClinic("xl", cluster.mqtt_port(1), subscribe=["vg/xl/ack"])
    xl.publish(
        "vg/xl/status",
        json.dumps(
            {
                "clinic": "xl",
                "online": True,
                "updated_at": _iso(now),
                "villages": {"dongcun": ["p-0001", "p-0002"], "xicun": ["p-0003"]},
            }
        ),
        retain=True,
    )
    for _, topic, payload in (
        _bp("xl", "p-0001", [(128, 80)] * 6, now)
        + _bp("xl", "p-0002", [(150, 92)] * 6, now)
        + _bp("xl", "p-0003", [(126, 78)] * 6, now)
    ):
        xl.publish(topic, payload)
    strip = {
        "kind": "ecg_strip",
        "ts": _iso(now - timedelta(days=2)),
        "strip_id": "hh-0003-1",
        "fs": 300.0,
        "seconds": 30.0,
        "lead": "I",
        "label": "af",
        "confidence": 0.96,
        "hr_bpm": 104.0,
        "model": "screen-v1",
        "patient_id": "p-0003",
        "device_id": "hh-0003",
        "received_at": _iso(now - timedelta(days=2)),
    }
    xl.publish("vg/xl/patient/p-0003/reading", json.dumps(strip))
    xl.publish(*_alert("xl", 1, "p-0002", "village", "bp_high", now))
    xl.publish(*_alert("xl", 2, "p-0002", "emergency", "vt_sustained", now))
    # Clinic sm on the native uplink.
    sm = NativeClinic("sm", tmp_path / "sm", cluster.urls)
    sm.set_status(
        {"clinic": "sm", "online": True, "updated_at": _iso(now), "villages": {"nancun": ["p-0001", "p-0002"]}}
    )
    sm.send(_bp("sm", "p-0001", [(122, 76)] * 6, now) + _bp("sm", "p-0002", [(160, 100)] * 3, now))
    sm.send_alert(*_alert("sm", 3, "p-0001", "township", "bp_crisis", now))
    sm.send_alert(*_alert("sm", 4, "p-0002", "county", "af_rvr", now))
    sm.wait_drained()

    def figures() -> dict | None:
        w = county.api("/api/weekly?days=7")[1]
        v = {r["village"]: r for r in w["by_village"]}
        ready = (
            v.get("dongcun", {}).get("bp_patients") == 2
            and v.get("xicun", {}).get("af_found") == 1
            and v.get("nancun", {}).get("af_found") == 1
            and v.get("nancun", {}).get("bp_too_few_readings") == 1
            and len(county.api("/api/alerts")[1]["alerts"]) == 4
        )
        return v if ready else None

    villages = county.wait_for(figures, what="readings, statuses and alerts stored")
    assert (
        villages["dongcun"]["bp_controlled"],
        villages["xicun"]["bp_control_rate"],
        villages["nancun"]["bp_control_rate"],
    ) == (1, 1.0, 1.0)

    page = browser_context.new_page()
    page.goto(f"http://127.0.0.1:{county.port}/")
    page.fill("#token", TOKEN)
    page.fill("#who", WHO)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#alerts tbody tr[data-tier]", timeout=10_000)
    rows = page.locator("#alerts tbody tr")
    assert [rows.nth(i).get_attribute("data-tier") for i in range(rows.count())] == [
        "emergency",
        "county",
        "township",
        "village",
    ]
    assert "持续性室速/室颤" in rows.nth(0).inner_text() and "xl" in rows.nth(0).inner_text()

    # 确认 on the emergency alert: the acknowledgement goes down to clinic xl on its ack topic.
    t_click = time.monotonic()
    rows.nth(0).locator("button").click()
    county.wait_for(lambda: xl.received, timeout=5, what="the ack on vg/xl/ack")
    ack_s = time.monotonic() - t_click
    # the stream's copy and the QoS 1 copy for an absent gateway (county/ack_copy.py): the gateway applies one
    assert {str(m) for m in xl.received} == {str(("vg/xl/ack", {"alert_id": "xl-a2", "by": WHO}))}
    assert ack_s < 2.0, f"the ack took {ack_s:.2f} s from the click"
    # The page shows the county's ack once it refreshes (the alert stays firing until the clinic's own
    # acknowledged transition comes back up, which a real gateway sends).
    page.locator("#alerts tbody tr[data-alert-id='xl-a2'] button", has_text="再次确认").wait_for(timeout=5_000)
    # ... and to clinic sm through its native uplink's control consumer.
    page.locator("#alerts tbody tr[data-alert-id='sm-a4'] button").click()
    county.wait_for(lambda: sm.control, timeout=5, what="the ack through the native uplink")
    assert {str(m) for m in sm.control} == {str(("vg/sm/ack", {"alert_id": "sm-a4", "by": WHO}))}
    assert [a["by"] for a in county.api("/api/alerts/xl-a2")[1]["county_acks"]] == [WHO]

    # The weekly figures per village and per clinic, drawn.
    page.wait_for_selector("#chart-bp-village svg rect[data-place='dongcun']")
    assert page.get_attribute("#chart-bp-village svg rect[data-place='dongcun']", "data-rate") == "0.5"
    assert "1/2（50.0%）" in page.inner_text("#chart-bp-village")
    assert "无足够读数" not in page.inner_text("#chart-bp-village")
    assert page.locator("#chart-bp-clinic svg rect[data-place]").count() == 2
    assert page.locator("#chart-af-village svg rect").count() == 2  # xicun (strip), nancun (alert)
    assert "135/85" in page.inner_text("#bp-rule")
    table = page.inner_text("#village-table")
    assert "xicun" in table and "1（0 / 1）" in table
    assert page.locator("#chart-alerts svg rect").count() >= 4
    picture = shot(page, "8-county")

    with page.expect_download() as dl:
        page.click("#download")
    report = Path(dl.value.path()).read_text(encoding="utf-8-sig")
    assert "村 village" in report and "dongcun,xl,2,2,1,50.0,0,0,0,0" in report
    assert "nancun,sm,2,1,1,100.0,1,1,1,0" in report

    xl.close()
    sm.close()
    assert county.stop() == 0
    assert picture.exists()
    assert time.monotonic() - t0 < 40, f"took {time.monotonic() - t0:.1f} s"
