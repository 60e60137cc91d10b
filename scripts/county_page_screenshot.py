"""Regenerates docs/img/county-page.png: a real 3-node NATS cluster, one county process, three clinics on
the native uplink (one stops), alerts at every tier, one acknowledged from the page, a patient looked up.

    .venv/bin/python scripts/county_page_screenshot.py docs/img/county-page.png
"""
import json
import sys
import tempfile
import time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.county_support import *
work = Path(tempfile.mkdtemp(prefix="shot"))
cl = NatsCluster(work)
county = CountyProcess(county_config_for(cl, work))
county.wait_for(lambda: county.health()["ready"] and len(county.health()["partitions"]) == 8, what="ready")
clinics = {"xinglong": "兴隆", "shuangmiao": "双庙", "gaotai": "高台"}
nats_cl = {}
for c in clinics:
    n = NativeClinic(c, work / c, cl.urls); nats_cl[c] = n
    n.set_status({"clinic": c, "online": True, "updated_at": "2026-03-15T09:00:00.000+08:00", "uplink": {"connected": True, "pending_alerts": 0, "pending_telemetry": 12 if c == "gaotai" else 0}})
import datetime as dt
now = dt.datetime.now(dt.timezone(dt.timedelta(hours=8)))
def iso(t): return t.isoformat(timespec="milliseconds")
for c, n in nats_cl.items():
    rows = []
    for i in range(40):
        _, topic, body = reading(c, f"p-000{i % 4 + 1}", i)
        b = json.loads(body); b["ts"] = iso(now - dt.timedelta(hours=6 * i)); rows.append((f"{c}-{i}", topic, json.dumps(b)))
    n.send(rows)
k = 0
for c, tier, cond, st in [("xinglong", "emergency", "vt_sustained", "firing"), ("shuangmiao", "county", "af_rvr", "firing"), ("gaotai", "township", "bp_crisis", "firing"), ("xinglong", "village", "bp_high", "acknowledged"), ("gaotai", "county", "bradycardia", "acknowledged"), ("shuangmiao", "village", "hypoglycemia", "resolved")]:
    k += 1
    opened = now - dt.timedelta(minutes=30 + 7 * k)
    body = {"alert_id": f"{c}-{k}", "patient_id": f"p-000{k%4+1}", "clinic": c, "tier": tier, "condition": cond, "severity": "critical" if tier == "emergency" else "high", "state": "firing", "opened_at": iso(opened), "updated_at": iso(opened), "escalated_from": None}
    nats_cl[c].send_alert(f"vg/{c}/alert/{tier}", json.dumps(body))
    if st != "firing":
        b2 = dict(body, state=st, updated_at=iso(opened + dt.timedelta(minutes=4 * k)), acknowledged_by="dr-wang")
        nats_cl[c].send_alert(f"vg/{c}/alert/{tier}", json.dumps(b2))
for n in nats_cl.values(): n.wait_drained()
nats_cl["gaotai"].close()  # a clean stop says offline
time.sleep(2)
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    pg = b.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    pg.goto(f"http://127.0.0.1:{county.port}/")
    pg.fill("#token", TOKEN); pg.fill("#who", "县中心-张医生"); pg.click("button[type=submit]")
    pg.wait_for_selector("#alerts tbody tr")
    pg.click("#alerts tbody tr:nth-child(2) button")
    time.sleep(1.5)
    pg.fill("#p-id", "p-0002"); pg.click("#patient-form button"); time.sleep(1.5)
    pg.screenshot(path=sys.argv[1] if len(sys.argv) > 1 else "docs/img/county-page.png", full_page=True)
    b.close()
print(county.api("/api/alerts/shuangmiao-2")[1]["county_acks"])
county.stop(); [n.close() for c, n in nats_cl.items() if c != "gaotai"]; cl.stop()
