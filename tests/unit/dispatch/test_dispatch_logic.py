"""Dispatcher logic beyond the basics, in-process with a fake clock (fast): the routing tree, repeats,
inhibition, silences, snoozes, channel grouping, receipts and the technical alert of a failing channel."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from box.config import ConfigError, load_config_text
from dispatch.alert_store import AlertStore
from dispatch.channels import ChannelConfig, DeliveryFailed
from dispatch.dispatcher import Dispatcher
from dispatch.escalation import EscalationSettings
from dispatch.routing import RoutingTable, RoutingTree
from dispatch.suppression import SilenceSpec
from stream.models import CHINA_TZ, Alert, AlertState, Condition, Finding, Severity, Tier

T0 = datetime(2024, 3, 15, 7, 30, tzinfo=CHINA_TZ)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


class Mqtt:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def __call__(self, tier: Tier, payload: str) -> None:
        self.sent.append((tier.value, json.loads(payload)))

    def take(self) -> list[tuple[str, str, str]]:
        out = [(t, p["condition"], p["state"]) for t, p in self.sent]
        self.sent.clear()
        return out


class FakeSender:
    """Stands in for a webhook: fails the first `fail` attempts, records what it got."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.got: list[tuple[str, dict]] = []
        self.attempts = 0

    async def send(self, d) -> str:
        self.attempts += 1
        if self.attempts <= self.fail:
            raise DeliveryFailed("HTTP 503 busy")
        self.got.append((d.idempotency_key, json.loads(d.body)))
        return "HTTP 200"

    async def close(self) -> None:
        return None


def make(tmp: Path, clock: Clock, yaml_extra: str = "", **esc) -> tuple[Dispatcher, Mqtt]:
    cfg = load_config_text(
        "clinic: c1\npatients:\n  - id: p-1\n    labels: {chronic_af: true, village: dongcun}\n"
        "  - id: p-2\n" + yaml_extra
    )
    cfg = cfg.model_copy(update={"escalation": EscalationSettings(**esc)} if esc else {})
    d = Dispatcher.from_config(cfg, AlertStore(tmp), clock=clock)
    m = Mqtt()
    d.attach(m)
    return d, m


async def raise_(d: Dispatcher, clock: Clock, cond: Condition, patient: str = "p-1", **kw):
    return await d.handle(Finding(patient_id=patient, condition=cond, at=clock(), **kw))


async def tick(d: Dispatcher, m: Mqtt, clock: Clock, **delta: float) -> list[tuple[str, str, str]]:
    clock.advance(**delta)
    await d.escalate_due()
    await d.deliver_pending()
    return m.take()


@pytest.fixture
def clock() -> Clock:
    return Clock()


# ---------------------------------------------------------------- routing tree

TREE = """\
routing:
  routes:
    - name: known chronic AF
      match: {condition: af, labels: {chronic_af: true}}
      tier: village
      severity: low
    - name: night low
      match: {severity: low, time_of_day: "22:00-07:00"}
      repeat_interval: 12h
"""


def test_tree_routes_by_patient_label_and_keeps_the_default_table_for_others(tmp_path, clock):
    cfg = load_config_text("clinic: c1\npatients:\n  - id: p-1\n    labels: {chronic_af: true}\n  - id: p-2\n" + TREE)
    table = RoutingTable(dict(cfg.routes), tree=cfg.routing, labels={p.id: dict(p.labels) for p in cfg.patients})
    af1 = table.decide(Finding(patient_id="p-1", condition=Condition.AF, at=T0), T0)
    af2 = table.decide(Finding(patient_id="p-2", condition=Condition.AF, at=T0), T0)
    assert (af1.tier, af1.severity) == (Tier.VILLAGE, Severity.LOW) and "known chronic AF" in af1.path[0]
    assert (af2.tier, af2.severity) == (Tier.TOWNSHIP, Severity.MEDIUM)


def test_time_of_day_matches_in_clinic_time_across_midnight():
    cfg = load_config_text("clinic: c1\n" + TREE)
    table = RoutingTable(tree=cfg.routing)
    f = Finding(patient_id="p", condition=Condition.BATTERY_LOW, at=T0)
    night = table.decide(f, T0.replace(hour=23))
    early = table.decide(f, T0.replace(hour=6, minute=59))
    day = table.decide(f, T0.replace(hour=7))
    assert night.repeat_interval == early.repeat_interval == timedelta(hours=12)
    assert day.repeat_interval == timedelta(hours=4) and day.tier is Tier.VILLAGE


def test_continue_adds_channels_and_lets_later_routes_decide():
    cfg = load_config_text("""\
clinic: c1
channels:
  - {name: sms, webhook: {url: "http://127.0.0.1:1/"}}
routing:
  routes:
    - match: {labels: {village: dongcun}}
      channels: [sms]
      continue: true
    - match: {condition: bp_crisis}
      tier: county
""")
    table = RoutingTable(tree=cfg.routing, labels={"p-1": {"village": "dongcun"}})
    d = table.decide(Finding(patient_id="p-1", condition=Condition.BP_CRISIS, at=T0), T0)
    assert (d.tier, d.channels) == (Tier.COUNTY, ("sms",))
    other = table.decide(Finding(patient_id="p-2", condition=Condition.BP_CRISIS, at=T0), T0)
    assert (other.tier, other.channels) == (Tier.COUNTY, ())


def test_flat_routes_override_still_works_under_the_tree():
    cfg = load_config_text("clinic: c1\nroutes:\n  bp_high: {tier: township, severity: high}\n")
    table = RoutingTable(dict(cfg.routes), tree=cfg.routing)
    assert table.route(Finding(patient_id="p", condition=Condition.BP_HIGH, at=T0)).tier is Tier.TOWNSHIP


def test_routing_errors_have_line_numbers():
    with pytest.raises(ConfigError) as e:
        load_config_text(
            "clinic: c1\nrouting:\n  routes:\n    - match: {condition: bp_crisiss}\n"
            "      channels: [nope]\n      contnue: true\n",
            "gw.yaml",
        )
    lines = [str(p) for p in e.value.problems]
    assert any(s.startswith("gw.yaml:4: routing.routes.0.match.condition") for s in lines), lines
    assert any(s.startswith("gw.yaml:5: routing.routes.0.channels.0: no channel named 'nope'") for s in lines), lines
    assert any(s.startswith("gw.yaml:6: routing.routes.0.contnue: unknown key") for s in lines), lines


# ---------------------------------------------------------------- ladder: audience, repeats


async def test_emergency_also_tells_county_and_village_and_repeats_until_acked(tmp_path, clock):
    d, m = make(tmp_path, clock)
    a = await raise_(d, clock, Condition.ASYSTOLE)
    await d.deliver_pending()
    assert m.take() == [
        ("emergency", "asystole", "firing"),
        ("county", "asystole", "firing"),
        ("village", "asystole", "firing"),
    ]
    assert await tick(d, m, clock, minutes=9) == []
    assert await tick(d, m, clock, minutes=1) == [
        ("emergency", "asystole", "firing"),
        ("county", "asystole", "firing"),
        ("village", "asystole", "firing"),
    ]
    await d.acknowledge(a.alert_id, "120-desk")
    await d.deliver_pending()
    m.take()
    assert await tick(d, m, clock, hours=1) == []
    assert [t["what"] for t in d.store.transitions(a.alert_id)] == ["raised", "repeated", "acknowledged"]


async def test_route_repeat_interval_reminds_below_the_top(tmp_path, clock):
    d, m = make(tmp_path, clock, "routing:\n  repeat_interval: 1h\n")
    await raise_(d, clock, Condition.BP_HIGH)  # village, 4h to escalate
    await d.deliver_pending()
    m.take()
    assert await tick(d, m, clock, minutes=59) == []
    assert await tick(d, m, clock, minutes=1) == [("village", "bp_high", "firing")]
    assert await tick(d, m, clock, hours=1) == [("village", "bp_high", "firing")]
    assert await tick(d, m, clock, hours=1) == [("village", "bp_high", "firing")]
    # At 4 h the escalation tells the township instead of a fourth reminder.
    assert await tick(d, m, clock, hours=1) == [("township", "bp_high", "firing")]


# ---------------------------------------------------------------- inhibition


async def test_crisis_inhibits_bp_high_until_it_resolves(tmp_path, clock):
    d, m = make(tmp_path, clock)
    crisis = await raise_(d, clock, Condition.BP_CRISIS)
    high = await raise_(d, clock, Condition.BP_HIGH)
    await d.deliver_pending()
    assert m.take() == [("township", "bp_crisis", "firing")]  # bp_high held
    s = d.store.get(high.alert_id)
    assert s.suppressed == f"inhibited:{crisis.alert_id}" and s.escalate_at is None
    assert await tick(d, m, clock, hours=5) == [("county", "bp_crisis", "firing")]  # bp_high stays held
    # The crisis is acknowledged and clears: bp_high, never sent, goes out now and starts its ladder.
    await d.acknowledge(crisis.alert_id, "dr-li")
    await raise_(d, clock, Condition.BP_CRISIS, active=False)
    await d.deliver_pending()
    sent = m.take()
    assert ("village", "bp_high", "firing") in sent and ("county", "bp_crisis", "resolved") in sent
    assert d.store.get(high.alert_id).escalate_at == clock() + timedelta(hours=4)


async def test_an_already_sent_alert_stops_escalating_when_inhibited(tmp_path, clock):
    d, m = make(tmp_path, clock)
    af = await raise_(d, clock, Condition.AF, patient="p-2")
    await raise_(d, clock, Condition.LEAD_OFF, patient="p-2")
    await d.deliver_pending()
    assert m.take() == [("township", "af", "firing"), ("village", "lead_off", "firing")]
    assert d.store.get(af.alert_id).suppressed.startswith("inhibited:")
    assert await tick(d, m, clock, hours=1) == []  # no county escalation for a rhythm call on a lead off
    await raise_(d, clock, Condition.LEAD_OFF, patient="p-2", active=False)  # low: resolves at once
    await d.deliver_pending()
    assert m.take() == [("village", "lead_off", "resolved")]  # af was told before: no second page
    assert await tick(d, m, clock, minutes=30) == [("county", "af", "firing")]


async def test_inhibition_is_per_patient(tmp_path, clock):
    d, m = make(tmp_path, clock)
    await raise_(d, clock, Condition.HYPOGLYCEMIA_SEVERE, patient="p-1")
    await raise_(d, clock, Condition.HYPOGLYCEMIA, patient="p-2")
    await d.deliver_pending()
    assert ("village", "hypoglycemia", "firing") in m.take()


# ---------------------------------------------------------------- silences and snoozes


async def test_silence_holds_then_reminds_when_it_ends_with_audit(tmp_path, clock):
    d, m = make(tmp_path, clock)
    sil = await d.add_silence(
        SilenceSpec.model_validate(
            {
                "match": {"patient": "p-2", "condition": ["battery_low", "bp_high"]},
                "duration": "1h",
                "by": "tech-wang",
                "why": "replacing the cuff",
            }
        ),
        source="http",
    )
    a = await raise_(d, clock, Condition.BATTERY_LOW, patient="p-2")
    await d.deliver_pending()
    assert m.take() == []
    assert d.store.get(a.alert_id).suppressed == f"silence:{sil.id}"
    assert await tick(d, m, clock, minutes=59) == []
    assert await tick(d, m, clock, minutes=1) == [("village", "battery_low", "firing")]
    whats = [(t["what"], t["detail"].get("held") or t["detail"].get("was")) for t in d.store.transitions(a.alert_id)]
    assert whats == [("raised", f"silence:{sil.id}"), ("released", f"silence:{sil.id}")]
    [stored] = [s for s in d.silences() if s.id == sil.id]
    assert (stored.created_by, stored.why, stored.source) == ("tech-wang", "replacing the cuff", "http")


async def test_silence_never_holds_critical_unless_it_says_so(tmp_path, clock):
    d, m = make(tmp_path, clock)
    await d.add_silence(
        SilenceSpec.model_validate({"match": {"patient": "p-1"}, "duration": "1h", "by": "t", "why": "patch change"}),
        source="mqtt",
    )
    await raise_(d, clock, Condition.ASYSTOLE)
    await raise_(d, clock, Condition.LEAD_OFF)
    await d.deliver_pending()
    sent = m.take()
    assert ("emergency", "asystole", "firing") in sent and ("village", "lead_off", "firing") not in sent


async def test_expiring_a_silence_early_releases_and_is_recorded(tmp_path, clock):
    d, m = make(tmp_path, clock)
    sil = await d.add_silence(
        SilenceSpec.model_validate(
            {"id": "s1", "match": {"condition": "bp_high"}, "duration": "8h", "by": "dr-li", "why": "known"}
        ),
        "mqtt",
    )
    again = await d.add_silence(
        SilenceSpec.model_validate(
            {"id": "s1", "match": {"condition": "bp_high"}, "duration": "8h", "by": "dr-li", "why": "known"}
        ),
        "mqtt",
    )
    assert again.created_at == sil.created_at and len(d.silences()) == 1  # QoS 1 redelivery: idempotent
    await raise_(d, clock, Condition.BP_HIGH)
    clock.advance(minutes=5)
    await d.expire_silence("s1", "dr-zhao")
    await d.deliver_pending()
    assert m.take() == [("village", "bp_high", "firing")]
    [s] = d.silences()
    assert (s.expired_by, s.expired_at) == ("dr-zhao", clock())


async def test_config_silence_with_time_of_day_window(tmp_path, clock):
    d, m = make(
        tmp_path,
        clock,
        "silences:\n  - match: {severity: low, time_of_day: '06:00-08:00'}\n    by: clinic\n    why: morning rounds\n",
    )
    await raise_(d, clock, Condition.BATTERY_LOW)  # 07:30: inside the window
    await d.deliver_pending()
    assert m.take() == []
    assert await tick(d, m, clock, minutes=30) == [("village", "battery_low", "firing")]  # 08:00


async def test_snooze_holds_escalation_and_renotifies_when_it_runs_out(tmp_path, clock):
    d, m = make(tmp_path, clock)
    a = await raise_(d, clock, Condition.BP_CRISIS)
    await d.deliver_pending()
    m.take()
    clock.advance(minutes=20)
    snoozed = await d.snooze(a.alert_id, "dr-li", timedelta(minutes=15), "on my way")
    assert snoozed.state is AlertState.FIRING
    assert await tick(d, m, clock, minutes=14) == []  # 34 min: the 30-min escalation is held
    assert await tick(d, m, clock, minutes=1) == [("township", "bp_crisis", "firing")]  # reminder at 35
    assert await tick(d, m, clock, minutes=29) == []
    assert await tick(d, m, clock, minutes=1) == [("county", "bp_crisis", "firing")]  # ladder restarted at 35
    snooze_row = [t for t in d.store.transitions(a.alert_id) if t["what"] == "snoozed"][0]
    assert snooze_row["detail"]["by"] == "dr-li" and snooze_row["detail"]["why"] == "on my way"


async def test_snooze_is_capped_and_only_for_firing_alerts(tmp_path, clock):
    d, m = make(tmp_path, clock)
    a = await raise_(d, clock, Condition.BP_CRISIS)
    s = await d.snooze(a.alert_id, "x", timedelta(days=1), "")
    assert d.store.get(a.alert_id).snoozed_until == clock() + timedelta(hours=2)
    await d.acknowledge(s.alert_id, "y")
    assert await d.snooze(a.alert_id, "x", timedelta(minutes=5)) is None


async def test_a_severity_upgrade_breaks_through_a_snooze(tmp_path, clock):
    d, m = make(tmp_path, clock)
    a = await raise_(d, clock, Condition.HYPERGLYCEMIA_CRISIS)
    await d.snooze(a.alert_id, "dr", timedelta(hours=1))
    await d.deliver_pending()
    m.take()
    await raise_(d, clock, Condition.HYPERGLYCEMIA_CRISIS, tier=Tier.COUNTY, severity=Severity.CRITICAL)
    await d.deliver_pending()
    assert m.take() == [("county", "hyperglycemia_crisis", "firing")]


# ---------------------------------------------------------------- channels


CHANNELS = """\
routing:
  group_wait: 30s
channels:
  - name: sms
    tiers: [township]
    webhook: {url: "http://127.0.0.1:1/"}
    backoff: {initial: 10s, max: 1m}
    alert_after_failures: 2
"""


async def test_a_burst_is_one_grouped_delivery_per_patient_and_tier(tmp_path, clock):
    d, m = make(tmp_path, clock, CHANNELS)
    fake = FakeSender()
    d._senders["sms"] = fake
    await raise_(d, clock, Condition.BP_CRISIS)
    clock.advance(seconds=5)
    await raise_(d, clock, Condition.HYPOGLYCEMIA_SEVERE)
    await raise_(d, clock, Condition.BP_CRISIS, patient="p-2")
    await d.deliver_pending()
    assert len(m.take()) == 3  # MQTT: one message per alert, at once
    await tick(d, m, clock, seconds=20)
    assert await d.deliver_channel("sms") is False  # group_wait not over
    await tick(d, m, clock, seconds=10)
    assert await d.deliver_channel("sms") and await d.deliver_channel("sms")
    bodies = sorted((b["patient_id"], [n["alert"]["condition"] for n in b["notifications"]]) for _, b in fake.got)
    assert bodies == [("p-1", ["bp_crisis", "hypoglycemia_severe"]), ("p-2", ["bp_crisis"])]
    assert all(b["text"].startswith("[vitalgate c1] p-") for _, b in fake.got)


async def test_failing_channel_retries_with_backoff_same_key_and_raises_a_technical_alert(tmp_path, clock):
    d, m = make(tmp_path, clock, CHANNELS)
    fake = FakeSender(fail=3)
    d._senders["sms"] = fake
    await raise_(d, clock, Condition.BP_CRISIS)
    await tick(d, m, clock, seconds=30)
    assert await d.deliver_channel("sms")  # attempt 1 fails
    assert await d.deliver_channel("sms") is False  # backing off 10 s
    await tick(d, m, clock, seconds=10)
    assert await d.deliver_channel("sms")  # attempt 2 fails: technical alert
    await d.deliver_pending()
    [(tier, tech)] = m.sent
    m.take()
    assert (tier, tech["condition"], tech["state"], tech["patient_id"]) == ("village", "device_offline", "firing", None)
    assert tech["evidence"]["channel"] == "sms" and "503" in tech["evidence"]["last_error"]
    assert d.status()["channels"]["sms"]["state"] == "failing"
    clock.advance(seconds=20)
    assert await d.deliver_channel("sms")  # attempt 3 fails (20 s backoff)
    clock.advance(seconds=40)
    assert await d.deliver_channel("sms")  # attempt 4 succeeds
    [(key, body)] = fake.got
    [receipt] = d.store.deliveries("sms")
    assert (receipt["attempts"], receipt["receipt"], receipt["idempotency_key"]) == (4, "HTTP 200", key)
    assert receipt["delivered_at"] is not None and body["idempotency_key"] == key
    await d.deliver_pending()
    assert m.take() == [("village", "device_offline", "resolved")]
    assert d.status()["channels"]["sms"]["state"] == "ok"


async def test_restart_keeps_pending_notes_and_deliveries(tmp_path, clock):
    d, m = make(tmp_path, clock, CHANNELS)
    await raise_(d, clock, Condition.BP_CRISIS)
    d.store.close()
    d2, m2 = make(tmp_path, clock, CHANNELS)
    fake = FakeSender()
    d2._senders["sms"] = fake
    await tick(d2, m2, clock, seconds=30)
    assert await d2.deliver_channel("sms")
    assert [n["event"] for _, b in fake.got for n in b["notifications"]] == ["raised"]


def test_silence_spec_needs_matchers_and_a_reason():
    with pytest.raises(ValueError):
        SilenceSpec.model_validate({"match": {}, "duration": "1h", "by": "x", "why": "y"})
    with pytest.raises(ValueError):
        SilenceSpec.model_validate({"match": {"patient": "p"}, "duration": "1h", "by": "x"})


def test_channel_is_exactly_one_kind():
    with pytest.raises(ValueError):
        ChannelConfig.model_validate({"name": "x"})
    assert RoutingTree().defaults is True


async def test_inhibit_rule_equal_on_a_label_spans_patients(tmp_path, clock):
    d, m = make(
        tmp_path,
        clock,
        "inhibit_rules:\n  - source: {condition: device_offline}\n"
        "    target: {condition: missed_readings}\n    equal: [village]\n",
    )
    await raise_(d, clock, Condition.DEVICE_OFFLINE, patient="p-1")  # village dongcun
    await raise_(d, clock, Condition.MISSED_READINGS, patient="p-2")  # no village label: not equal
    await d.deliver_pending()
    assert ("village", "missed_readings", "firing") in m.take()
    assert d.inhibit_rules[0].equal == ["village"] and len(d.inhibit_rules) == 1  # replaces the defaults


def test_dispatch_config_errors_point_at_their_lines():
    text = (
        "clinic: c1\n"
        "http: {port: 8080, token: short}\n"
        "channels:\n"
        "  - name: a\n"
        "    console: {}\n"
        "  - name: a\n"
        "    webhook: {url: ftp://x}\n"
        "silences:\n"
        "  - match: {patient: p-1}\n"
        "    by: x\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "gw.yaml")
    got = {(p.line, p.field) for p in e.value.problems}
    assert (2, "http.token") in got
    assert (6, "channels.1.name") in got
    assert (7, "channels.1.webhook.url") in got
    assert (9, "silences.0.why") in got or (9, "silences.0") in got


def _firing(condition: Condition, tier: Tier, severity: Severity) -> Alert:
    now = datetime(2026, 12, 7, 8, 0, tzinfo=CHINA_TZ)
    return Alert(
        alert_id="a-1",
        patient_id="p-1",
        clinic="c1",
        tier=tier,
        condition=condition,
        severity=severity,
        opened_at=now,
        updated_at=now,
    )


def test_a_condition_rung_never_waits_longer_than_the_configured_tier_timeout():
    cfg = load_config_text("clinic: c1\nescalation:\n  ack_timeout: {township: 5m}\n")
    alert = _firing(Condition.HYPOGLYCEMIA_SEVERE, Tier.TOWNSHIP, Severity.CRITICAL)
    # the built-in rung is 10 min to emergency; the clinic said 5 min at township
    assert cfg.escalation.next_step(alert) == (timedelta(minutes=5), Tier.EMERGENCY)
    # a rung shorter than the tier timeout still wins
    default = EscalationSettings()
    assert default.next_step(alert) == (timedelta(minutes=10), Tier.EMERGENCY)
    fast = EscalationSettings(
        conditions={Condition.HYPOGLYCEMIA_SEVERE: {"at": "township", "timeout": "2m", "to": "emergency"}}
    )
    assert fast.next_step(alert) == (timedelta(minutes=2), Tier.EMERGENCY)


async def test_a_silence_over_mqtt_never_holds_critical_alerts_nor_lasts_past_a_day(tmp_path, clock):
    """Issue 16: on an open broker anyone could silence every alert, critical ones included, for ten years."""
    from dispatch.control import handle_control

    d, m = make(tmp_path, clock)
    crit = b'{"match": {"patient": "p-1"}, "duration": "2h", "by": "x", "why": "y", "include_critical": true}'
    assert "critical" in (await handle_control(d, "silence", crit) or "")
    long = b'{"match": {"patient": "p-1"}, "duration": "3650d", "by": "x", "why": "y"}'
    assert "at most" in (await handle_control(d, "silence", long) or "")
    ends = (clock() + timedelta(days=3)).isoformat()
    assert "at most" in (
        await handle_control(
            d, "silence", f'{{"match": {{"patient": "p-1"}}, "ends_at": "{ends}", "by": "x", "why": "y"}}'.encode()
        )
        or ""
    )
    assert d.silences() == []
    ok = b'{"match": {"patient": "p-1", "condition": ["lead_off"]}, "duration": "2h", "by": "tech", "why": "patch"}'
    assert await handle_control(d, "silence", ok) is None
    assert len(d.silences()) == 1
