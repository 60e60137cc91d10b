"""Channels beyond MQTT on a real `vitalgate run`: a real local webhook receiver that fails the first N
deliveries, grouping of a burst, idempotency keys, the technical alert of a failing channel, receipts
and the console channel."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.dispatch import CLINIC, WebhookReceiver, api, bp, free_port, glucose, now, wait_api, write_config

pytestmark = pytest.mark.broker


@pytest.fixture
def receiver():
    r = WebhookReceiver(fail_first=3)
    yield r
    r.close()


def test_webhook_failing_first_deliveries_is_retried_grouped_and_surfaced(
    tmp_path, broker, gateway_process, watcher_factory, receiver
):
    http = free_port()
    extra = f"""\
routing:
  group_wait: 1s
channels:
  - name: bridge
    tiers: [township]
    webhook: {{url: "{receiver.url}", headers: {{Authorization: "Bearer sms-gw-secret"}}, timeout: 2s}}
    backoff: {{initial: 300ms, max: 1s}}
    alert_after_failures: 2
  - name: log
    tiers: [township]
    console: {{}}
"""
    gw = gateway_process(write_config(tmp_path, broker.port, extra, http_port=http))
    w = watcher_factory(broker.port, [f"vg/{CLINIC}/#"])
    wait_api(http)
    t = now()
    # A burst for one patient at the township tier: severe hypoglycaemia and a confirmed BP crisis.
    w.publish(f"vg/{CLINIC}/device/glu-0001/reading", glucose(t, 2.6, 1))
    w.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp(t - timedelta(minutes=2), 186, 116, 1))
    w.publish(f"vg/{CLINIC}/device/bp-0001/reading", bp(t, 188, 117, 2))
    # MQTT is one message per alert and is not held back by the failing webhook.
    for cond in ("hypoglycemia_severe", "bp_crisis"):
        w.wait_for(lambda t_, b: t_.endswith("/alert/township") and b.get("condition") == cond, timeout=10)

    # The webhook answers 503 three times: after two failures the channel raises a technical alert.
    _, tech = w.wait_for(lambda t_, b: b.get("condition") == "device_offline" and b["state"] == "firing", timeout=15)
    assert tech["evidence"]["channel"] == "bridge" and "503" in tech["evidence"]["last_error"]
    ok = receiver.wait_for(lambda r: r["status"] == 200, timeout=15)
    _, resolved = w.wait_for(lambda t_, b: b.get("alert_id") == tech["alert_id"] and b["state"] == "resolved")

    first = receiver.requests[:4]
    assert [r["status"] for r in first] == [503, 503, 503, 200]
    keys = {r["headers"]["Idempotency-Key"] for r in first}
    assert len(keys) == 1, "a retry must carry the same idempotency key"
    assert all(r["headers"]["Authorization"] == "Bearer sms-gw-secret" for r in first)
    gaps = [b["t"] - a["t"] for a, b in zip(first, first[1:])]
    assert gaps[0] >= 0.24 and gaps[1] >= 0.48, gaps  # exponential backoff: 300 ms, 600 ms, ... less 20 % jitter
    body = ok["body"]
    assert (body["patient_id"], body["tier"], body["clinic"]) == ("p-0001", "township", CLINIC)
    assert sorted(n["alert"]["condition"] for n in body["notifications"]) == ["bp_crisis", "hypoglycemia_severe"]
    assert body["text"].startswith(f"[vitalgate {CLINIC}] p-0001 township:")

    # Receipts are recorded and served by the API.
    _, got = api(http, "GET", "/api/deliveries?channel=bridge")
    [receipt] = [d for d in got["deliveries"] if d["idempotency_key"] in keys]
    assert (receipt["attempts"], receipt["receipt"]) == (4, "HTTP 200") and receipt["delivered_at"]
    _, st = api(http, "GET", "/api/status")
    assert st["channels"]["bridge"]["state"] == "ok" and st["counters"]["channel_failures"] == 3
    assert gw.stop() == 0
    assert "notify [vitalgate c1] p-0001 township:" in gw.output()  # the console channel
    assert resolved["condition"] == "device_offline"
