"""Regenerates docs/img/county-page.png: a real 3-node NATS cluster, one county process, three clinics on
the native uplink (one stops) with their patients by village, home BP readings and an AF strip, alerts at
every tier, one acknowledged from the page, a patient looked up; the weekly figures per village and clinic.

    .venv/bin/python scripts/county_page_screenshot.py docs/img/county-page.png
"""

import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.county import TOKEN, CountyProcess, NativeClinic, NatsCluster, county_config_for, reading  # noqa: E402

work = Path(tempfile.mkdtemp(prefix="shot"))
cl = NatsCluster(work)
county = CountyProcess(county_config_for(cl, work))
county.wait_for(lambda: county.health()["ready"] and len(county.health()["partitions"]) == 8, what="ready")
clinics = {"xinglong": "兴隆", "shuangmiao": "双庙", "gaotai": "高台"}
# Each clinic's patients by village, as its gateway's status lists them (patients[].labels.village).
villages = {
    "xinglong": {"dongcun": ["p-0001", "p-0002"], "xicun": ["p-0003", "p-0004"]},
    "shuangmiao": {"nanwan": ["p-0001", "p-0002", "p-0003", "p-0004"]},
    "gaotai": {"gaotai": ["p-0001", "p-0002", "p-0003"]},
}
nats_cl = {}
for c in clinics:
    n = NativeClinic(c, work / c, cl.urls)
    nats_cl[c] = n
    n.set_status(
        {
            "clinic": c,
            "online": True,
            "updated_at": "2026-03-15T09:00:00.000+08:00",
            "villages": villages[c],
            "uplink": {"connected": True, "pending_alerts": 0, "pending_telemetry": 12 if c == "gaotai" else 0},
        }
    )
now = dt.datetime.now(dt.timezone(dt.timedelta(hours=8)))


def iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds")


# Home BP means per patient (systolic, diastolic): some controlled (< 135/85), some not.
bp_means = {
    "xinglong": [(128, 80), (142, 88), (124, 78), (131, 83)],
    "shuangmiao": [(150, 94), (127, 79), (133, 86), (121, 75)],
    "gaotai": [(138, 84), (126, 80), (119, 74), (145, 90)],
}
for c, n in nats_cl.items():
    rows = []
    for i in range(40):
        _, topic, body = reading(c, f"p-000{i % 4 + 1}", i)
        b = json.loads(body)
        b["ts"] = iso(now - dt.timedelta(hours=6 * i))
        rows.append((f"{c}-{i}", topic, json.dumps(b)))
    for k, (s, d) in enumerate(bp_means[c]):
        p = f"p-000{k + 1}"
        for j in range(7):
            ts = iso(now - dt.timedelta(hours=20 * j + k))
            b = {
                "kind": "blood_pressure",
                "ts": ts,
                "seq": j,
                "systolic": s + (j % 3) - 1,
                "diastolic": d + (j % 2),
                "pulse": 72,
                "unit": "mmHg",
                "patient_id": p,
                "device_id": f"bp-{p}",
                "received_at": ts,
            }
            rows.append((f"{c}-bp-{p}-{j}", f"vg/{c}/patient/{p}/reading", json.dumps(b)))
    if c == "xinglong":  # an AF screening strip from a handheld
        ts = iso(now - dt.timedelta(days=2))
        b = {
            "kind": "ecg_strip",
            "ts": ts,
            "strip_id": "hh-0003-1",
            "fs": 300.0,
            "seconds": 30.0,
            "lead": "I",
            "label": "af",
            "confidence": 0.95,
            "hr_bpm": 98.0,
            "model": "screen-v1",
            "patient_id": "p-0003",
            "device_id": "hh-0003",
            "received_at": ts,
        }
        rows.append(("xinglong-strip-1", "vg/xinglong/patient/p-0003/reading", json.dumps(b)))
    n.send(rows)
k = 0
for c, tier, cond, st in [
    ("xinglong", "emergency", "vt_sustained", "firing"),
    ("shuangmiao", "county", "af_rvr", "firing"),
    ("gaotai", "township", "bp_crisis", "firing"),
    ("xinglong", "village", "bp_high", "acknowledged"),
    ("gaotai", "county", "bradycardia", "acknowledged"),
    ("shuangmiao", "village", "hypoglycemia", "resolved"),
]:
    k += 1
    opened = now - dt.timedelta(minutes=30 + 7 * k)
    body = {
        "alert_id": f"{c}-{k}",
        "patient_id": f"p-000{k % 4 + 1}",
        "clinic": c,
        "tier": tier,
        "condition": cond,
        "severity": "critical" if tier == "emergency" else "high",
        "state": "firing",
        "opened_at": iso(opened),
        "updated_at": iso(opened),
        "escalated_from": None,
    }
    nats_cl[c].send_alert(f"vg/{c}/alert/{tier}", json.dumps(body))
    if st != "firing":
        b2 = dict(body, state=st, updated_at=iso(opened + dt.timedelta(minutes=4 * k)), acknowledged_by="dr-wang")
        nats_cl[c].send_alert(f"vg/{c}/alert/{tier}", json.dumps(b2))
for n in nats_cl.values():
    n.wait_drained()
nats_cl["gaotai"].close()  # a clean stop says offline
time.sleep(2)
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    pg = b.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    pg.goto(f"http://127.0.0.1:{county.port}/")
    pg.fill("#token", TOKEN)
    pg.fill("#who", "县中心-张医生")
    pg.click("button[type=submit]")
    pg.wait_for_selector("#alerts tbody tr")
    pg.click("#alerts tbody tr:nth-child(2) button")
    time.sleep(1.5)
    pg.fill("#p-id", "p-0002")
    pg.click("#patient-form button")
    time.sleep(1.5)
    pg.screenshot(path=sys.argv[1] if len(sys.argv) > 1 else "docs/img/county-page.png", full_page=True)
    b.close()
print(county.api("/api/alerts/shuangmiao-2")[1]["county_acks"])
county.stop()
for c, n in nats_cl.items():
    if c != "gaotai":
        n.close()
cl.stop()
