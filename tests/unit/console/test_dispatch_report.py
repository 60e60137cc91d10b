"""`vitalgate alerts report`: the alarm-fatigue report read from the alert store's transitions table."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

from box.config import load_config_text
from dispatch.alert_store import AlertStore
from dispatch.dispatcher import Dispatcher
from stream.models import CHINA_TZ, Condition, Finding


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def test_report_counts_alarms_ack_delays_and_escalations(tmp_path):
    text = f"clinic: c1\nstorage: {{path: {tmp_path / 'var'}}}\npatients:\n  - id: p-1\n  - id: p-2\n"
    cfg_path = tmp_path / "gw.yaml"
    cfg_path.write_text(text)
    cfg = load_config_text(text)
    clock = Clock(datetime.now(CHINA_TZ) - timedelta(days=1))
    d = Dispatcher.from_config(cfg, AlertStore(cfg.storage.path), clock=clock)

    async def finding(cond: Condition, patient: str, **kw):
        return await d.handle(Finding(patient_id=patient, condition=cond, at=clock(), **kw))

    def later(**kw: float) -> None:
        clock.now += timedelta(**kw)

    crisis = await finding(Condition.BP_CRISIS, "p-1")
    await finding(Condition.BP_HIGH, "p-1")  # held by the crisis
    later(minutes=12)
    await d.acknowledge(crisis.alert_id, "dr-li")  # township, 12 min
    hypo = await finding(Condition.HYPOGLYCEMIA_SEVERE, "p-1")
    later(minutes=10)
    await d.escalate_due()  # -> emergency
    later(minutes=3)
    await d.acknowledge(hypo.alert_id, "120-desk")  # emergency, 3 min
    await finding(Condition.BP_HIGH, "p-2")
    later(minutes=1)
    await finding(Condition.BP_HIGH, "p-2", active=False)  # cleared before anyone acknowledged
    c2 = await finding(Condition.BP_CRISIS, "p-2")
    later(minutes=30)
    await d.escalate_due()  # -> county
    later(minutes=2)
    await d.acknowledge(c2.alert_id, "county-desk")  # county, 2 min
    d.store.close()

    run = [sys.executable, "-m", "box.cli", "alerts", "report", "--config", str(cfg_path), "--since", "7d"]
    out = subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["rules"]["bp_crisis"]["raised"] == 2 and r["rules"]["bp_crisis"]["acknowledged"] == 2
    assert r["rules"]["bp_crisis"]["escalated"] == 1
    assert r["rules"]["bp_high"]["raised"] == 2 and r["rules"]["bp_high"]["held"] == 1
    assert r["rules"]["bp_high"]["cleared_unacknowledged"] == 1
    assert r["patients"]["p-1"]["raised"] == 3 and r["patients"]["p-2"]["raised"] == 2
    assert {t: v["median_s"] for t, v in r["ack_delay"].items()} == {
        "township": 12 * 60,
        "county": 2 * 60,
        "emergency": 3 * 60,
    }
    assert {(e["from"], e["to"]): e["n"] for e in r["escalations"]} == {
        ("township", "emergency"): 1,
        ("township", "county"): 1,
    }
    assert r["holds"]["inhibited"] == 1

    text_out = subprocess.run(run, capture_output=True, text=True, timeout=30)
    assert text_out.returncode == 0
    assert "alarms per rule (5 raised)" in text_out.stdout
    assert "township   n=1    median     12m" in text_out.stdout
    assert "township -> county: 1" in text_out.stdout
    # Nothing in the last hour.
    empty = subprocess.run([*run[:-1], "1h", "--json"], capture_output=True, text=True, timeout=30)
    assert json.loads(empty.stdout)["rules"] == {}


def test_report_without_a_store_says_so(tmp_path):
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(f"clinic: c1\nstorage: {{path: {tmp_path / 'nothing'}}}\n")
    out = subprocess.run(
        [sys.executable, "-m", "box.cli", "alerts", "report", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "no alert store" in out.stderr
