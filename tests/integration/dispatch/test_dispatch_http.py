"""The dispatcher's HTTP API on a real `vitalgate run` (uvicorn inside the gateway's loop) with real
Mosquitto: token auth, listing, ack, snooze with its reminder, silences over HTTP and MQTT with expiry,
inhibition seen through readings, and the audit trail (who, when, why)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from tests.support.dispatch import CLINIC, api, bp, free_port, glucose, now, wait_api, write_config

pytestmark = pytest.mark.broker


def alert_of(port: int, patient: str, condition: str, state: str = "active") -> dict | None:
    _, body = api(port, "GET", f"/api/alerts?state={state}&patient_id={patient}")
    return next((a for a in body["alerts"] if a["condition"] == condition), None)


def test_http_api_ack_snooze_inhibition_and_audit(tmp_path, broker, gateway_process, watcher_factory):
    http = free_port()
    gw = gateway_process(write_config(tmp_path, broker.port, http_port=http))
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/#"])
    wait_api(http)

    assert api(http, "GET", "/api/alerts", token=None)[0] == 401
    assert api(http, "GET", "/api/alerts", token="wrong-token-0123456789")[0] == 401

    # A confirmed BP crisis also meets bp_high (two readings >= 160/100): bp_high is held, not sent.
    t = now()
    w.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp(t - timedelta(minutes=2), 186, 116, 1))
    w.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp(t, 188, 117, 2))
    _, crisis = w.wait_for(lambda t_, b: t_.endswith("/alert/township") and b.get("condition") == "bp_crisis")
    deadline = time.monotonic() + 5
    while (high := alert_of(http, "p-0001", "bp_high")) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert high is not None and high["suppressed"] == f"inhibited:{crisis['alert_id']}"
    assert high["tiers_notified"] == [] and high["escalate_at"] is None

    # Snooze over HTTP: held, then a reminder on the tier when it runs out.
    code, body = api(
        http,
        "POST",
        f"/api/alerts/{crisis['alert_id']}/snooze",
        {"by": "dr-li", "duration": "2s", "why": "calling the family"},
    )
    assert code == 200 and body["alert"]["suppressed"] == "snooze" and body["alert"]["snoozed_until"]
    w.wait_for(
        lambda t_, b: (
            t_.endswith("/alert/township")
            and b.get("alert_id") == crisis["alert_id"]
            and b["updated_at"] > crisis["updated_at"]
        ),
        timeout=6,
    )
    assert alert_of(http, "p-0001", "bp_crisis")["suppressed"] is None

    # Ack over HTTP: confirmed on MQTT; a second ack is a conflict; unknown ids are 404.
    code, body = api(http, "POST", f"/api/alerts/{crisis['alert_id']}/ack", {"by": "dr-li"})
    assert code == 200 and body["alert"]["state"] == "acknowledged" and body["alert"]["acknowledged_by"] == "dr-li"
    w.wait_for(lambda t_, b: b.get("alert_id") == crisis["alert_id"] and b["state"] == "acknowledged")
    assert api(http, "POST", f"/api/alerts/{crisis['alert_id']}/ack", {"by": "dr-zhao"})[0] == 409
    assert api(http, "POST", "/api/alerts/nope/ack", {"by": "x"})[0] == 404
    assert api(http, "POST", f"/api/alerts/{crisis['alert_id']}/ack", {})[0] == 422

    # The crisis clears (it was acknowledged, so it resolves): bp_high, never sent, goes to the village now.
    w.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp(t + timedelta(minutes=3), 165, 101, 3))
    w.wait_for(lambda t_, b: b.get("alert_id") == crisis["alert_id"] and b["state"] == "resolved")
    w.wait_for(
        lambda t_, b: t_.endswith("/alert/village") and b.get("condition") == "bp_high" and b["state"] == "firing"
    )

    _, detail = api(http, "GET", f"/api/alerts/{crisis['alert_id']}")
    trail = [(x["what"], x["detail"].get("by"), x["detail"].get("why")) for x in detail["transitions"]]
    assert ("snoozed", "dr-li", "calling the family") in trail and ("acknowledged", "dr-li", None) in trail
    assert [x[0] for x in trail][-1] == "resolved"
    assert all(x["at"] for x in detail["transitions"])
    assert gw.stop() == 0


def test_silences_over_mqtt_and_http_hold_alerts_until_they_end(tmp_path, broker, gateway_process, watcher_factory):
    http = free_port()
    gw = gateway_process(write_config(tmp_path, broker.port, http_port=http))
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/#"])
    wait_api(http)

    # MQTT: a short silence with the client's own id (QoS 1 may deliver it twice).
    msg = json.dumps(
        {
            "id": "visit-p2",
            "match": {"patient": "p-0002", "condition": "hypoglycemia"},
            "duration": "3s",
            "by": "dr-wang",
            "why": "home visit, feeding now",
        }
    )
    w.publish(f"vg/{CLINIC}/silence", msg)
    w.publish(f"vg/{CLINIC}/silence", msg)
    w.publish(f"vg/{CLINIC}/silence", json.dumps({"match": {}, "duration": "1h", "by": "x", "why": "all"}))
    # HTTP: a long silence for p-0001, ended early.
    code, created = api(
        http,
        "POST",
        "/api/silences",
        {
            "match": {"patient": "p-0001", "condition": ["hypoglycemia"]},
            "duration": "1h",
            "by": "tech-zhao",
            "why": "meter check",
        },
    )
    assert code == 201
    sid = created["silence"]["id"]
    deadline = time.monotonic() + 5
    while len(api(http, "GET", "/api/silences?active=true")[1]["silences"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    sils = {s["id"]: s for s in api(http, "GET", "/api/silences?active=true")[1]["silences"]}
    assert set(sils) == {"visit-p2", sid} and sils["visit-p2"]["created_by"] == "dr-wang"
    assert sils["visit-p2"]["source"] == "mqtt" and sils[sid]["why"] == "meter check"

    t = now()
    w.publish(f"vg/{CLINIC}/device/glu-0002/reading", glucose(t, 3.5, 1))
    w.publish(f"vg/{CLINIC}/device/glu-0001/reading", glucose(t, 3.5, 1))
    deadline = time.monotonic() + 5
    while (a2 := alert_of(http, "p-0002", "hypoglycemia")) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert a2["suppressed"] == "silence:visit-p2"
    # The MQTT silence ends by itself: the village doctor is told then.
    w.wait_for(lambda t_, b: t_.endswith("/alert/village") and b.get("patient_id") == "p-0002", timeout=8)
    assert not [b for _, b in w.json(f"vg/{CLINIC}/alert/") if b.get("patient_id") == "p-0001"]
    a1 = alert_of(http, "p-0001", "hypoglycemia")
    assert a1["suppressed"] == f"silence:{sid}"
    # The HTTP silence is ended early by someone else: recorded, and the alert goes out.
    code, ended = api(http, "POST", f"/api/silences/{sid}/expire", {"by": "dr-li"})
    assert code == 200 and ended["silence"]["expired_by"] == "dr-li" and ended["silence"]["expired_at"]
    w.wait_for(lambda t_, b: t_.endswith("/alert/village") and b.get("patient_id") == "p-0001", timeout=5)
    assert api(http, "POST", "/api/silences", {"match": {"patient": "p-0001"}, "by": "x", "why": "no end"})[0] == 400
    assert api(http, "POST", "/api/silences/none/expire", {"by": "x"})[0] == 404
    # The refused MQTT silence (no matchers) is counted in the status, never silently applied.
    _, st = w.wait_for(
        lambda t_, b: (
            t_.endswith("/status")
            and "bad_silence" in b.get("counters", {}).get("rejected", {})
            and b["dispatch"]["silences_active"] == 0
        ),
        timeout=5,
    )
    assert st["counters"]["rejected"]["bad_silence"] == 1
    assert gw.stop() == 0


# ---------------------------------------------------------------- issue 16: hostile bodies and values


def test_log_values_cannot_forge_a_line() -> None:
    import logging

    from box.logs import KeyValueFormatter

    rec = logging.LogRecord("vitalgate.dispatch", logging.INFO, "", 0, "ack by %s", ("x\n2026-01-01 INFO fake",), None)
    rec.by = "doc\r\nINFO vitalgate: forged"
    rec.alert_id = "a-1"
    line = KeyValueFormatter().format(rec)
    assert "\n" not in line and "\r" not in line
    assert 'by="doc\\r\\nINFO vitalgate: forged"' in line and "alert_id=a-1" in line


def test_absurd_durations_are_a_clear_error_not_an_overflow() -> None:
    from stream.models import parse_duration

    for bad in ("99999999d", 1e300, float("nan"), -5):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_duration("3650d").days == 3650
