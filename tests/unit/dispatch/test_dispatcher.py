"""Dispatcher: tiered alerts, one per (patient, condition), acks, escalation, latching, outbox, restart.

SQLite under tmp_path, a fake clock, and a list-collecting sender; the tests
drive `escalate_due()` and `deliver_pending()` directly instead of the timer loop.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from dispatch.alert_store import AlertStore
from dispatch.dispatcher import Dispatcher
from dispatch.escalation import EscalationSettings
from dispatch.routing import DEFAULT_ROUTES, LATCHING, RoutingTable
from stream.models import CHINA_TZ, AlertState, Condition, Finding, Severity, Tier

T0 = datetime(2024, 3, 15, 7, 30, tzinfo=CHINA_TZ)


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class Channel:
    """An async AlertSender that records what was published, or raises while `down`."""

    def __init__(self) -> None:
        self.sent: list[tuple[Tier, dict]] = []
        self.down = False
        self.fail_after: int | None = None  # raise once this many messages went through

    async def __call__(self, tier: Tier, payload: str) -> None:
        if self.down or (self.fail_after is not None and len(self.sent) >= self.fail_after):
            raise ConnectionError("broker unreachable")
        self.sent.append((tier, json.loads(payload)))

    def take(self) -> list[tuple[str, str, str]]:
        """(tier, condition, state) of everything sent since the last take()."""
        out = [(t.value, p["condition"], p["state"]) for t, p in self.sent]
        self.sent.clear()
        return out


class Rig:
    def __init__(self, directory: Path, clock: FakeClock, **escalation) -> None:
        self.directory = directory
        self.clock = clock
        self.store = AlertStore(directory)
        self.d = Dispatcher("c1", self.store, RoutingTable(), EscalationSettings(**escalation), clock=clock)
        self.channel = Channel()
        self.d.attach(self.channel)

    async def finding(self, condition: Condition, patient: str = "p-1", **kw):
        return await self.d.handle(Finding(patient_id=patient, condition=condition, at=self.clock(), **kw))

    async def flush(self) -> list[tuple[str, str, str]]:
        await self.d.deliver_pending()
        return self.channel.take()

    async def tick(self, **delta: float) -> list[tuple[str, str, str]]:
        """Advance the clock, run the escalation timer, deliver; return what went out."""
        self.clock.advance(**delta)
        await self.d.escalate_due()
        return await self.flush()

    def restart(self) -> Rig:
        """A new process on the same storage directory."""
        self.store.close()
        return Rig(self.directory, self.clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rig(tmp_path, clock) -> Rig:
    return Rig(tmp_path, clock)


# ---------------------------------------------------------------- routing (docs/spec/clinical-rules.md §Routing)

DOMAIN_TIERS = {
    Condition.BP_HIGH: Tier.VILLAGE,
    Condition.BP_CRISIS: Tier.TOWNSHIP,
    Condition.HYPOGLYCEMIA: Tier.VILLAGE,
    Condition.HYPOGLYCEMIA_SEVERE: Tier.TOWNSHIP,
    Condition.HYPERGLYCEMIA: Tier.VILLAGE,
    Condition.HYPERGLYCEMIA_CRISIS: Tier.TOWNSHIP,
    Condition.SPO2_LOW: Tier.TOWNSHIP,
    Condition.BRADYCARDIA: Tier.COUNTY,
    Condition.TACHYCARDIA: Tier.VILLAGE,
    Condition.AF: Tier.TOWNSHIP,
    Condition.AF_RVR: Tier.COUNTY,
    Condition.VT: Tier.COUNTY,
    Condition.VT_SUSTAINED: Tier.EMERGENCY,
    Condition.PAUSE: Tier.COUNTY,
    Condition.ASYSTOLE: Tier.EMERGENCY,
    Condition.PVC_FREQUENT: Tier.VILLAGE,
    Condition.MISSED_READINGS: Tier.VILLAGE,
    Condition.DEVICE_OFFLINE: Tier.VILLAGE,
    Condition.LEAD_OFF: Tier.VILLAGE,
    Condition.BATTERY_LOW: Tier.VILLAGE,
}


def test_every_condition_has_a_default_route():
    assert set(DEFAULT_ROUTES) == set(Condition) == set(DOMAIN_TIERS)


@pytest.mark.parametrize("condition", list(DOMAIN_TIERS), ids=lambda c: c.value)
def test_default_tier_matches_domain_table(condition):
    route = RoutingTable().route(Finding(patient_id="p", condition=condition, at=T0))
    assert route.tier is DOMAIN_TIERS[condition]


def test_bp_crisis_is_high_severity_and_technical_conditions_are_low():
    table = RoutingTable()
    assert table.route(Finding(patient_id="p", condition=Condition.BP_CRISIS, at=T0)).severity is Severity.HIGH
    for c in (Condition.MISSED_READINGS, Condition.DEVICE_OFFLINE, Condition.LEAD_OFF, Condition.BATTERY_LOW):
        assert table.route(Finding(patient_id="p", condition=c, at=T0)).severity is Severity.LOW


def test_finding_may_raise_but_never_lower_its_route():
    table = RoutingTable()
    hi = Finding(
        patient_id="p", condition=Condition.HYPERGLYCEMIA_CRISIS, at=T0, tier=Tier.COUNTY, severity=Severity.CRITICAL
    )
    assert (table.route(hi).tier, table.route(hi).severity) == (Tier.COUNTY, Severity.CRITICAL)
    low = Finding(patient_id="p", condition=Condition.ASYSTOLE, at=T0, tier=Tier.VILLAGE, severity=Severity.LOW)
    assert (table.route(low).tier, table.route(low).severity) == (Tier.EMERGENCY, Severity.CRITICAL)


async def test_bp_crisis_is_published_to_township(rig):
    alert = await rig.finding(Condition.BP_CRISIS)
    assert alert.tier is Tier.TOWNSHIP and alert.severity is Severity.HIGH
    assert await rig.flush() == [("township", "bp_crisis", "firing")]


async def test_hypoglycemia_severe_is_published_to_township(rig):
    await rig.finding(Condition.HYPOGLYCEMIA_SEVERE)
    assert await rig.flush() == [("township", "hypoglycemia_severe", "firing")]


@pytest.mark.parametrize("condition", [Condition.ASYSTOLE, Condition.VT_SUSTAINED])
async def test_emergency_alerts_also_go_to_the_county_and_the_village_doctor(rig, condition):
    await rig.finding(condition)
    assert await rig.flush() == [
        ("emergency", condition.value, "firing"),
        ("county", condition.value, "firing"),
        ("village", condition.value, "firing"),
    ]


async def test_spo2_severe_finding_goes_to_emergency_county_and_village(rig):
    await rig.finding(Condition.SPO2_LOW, tier=Tier.EMERGENCY, severity=Severity.CRITICAL)
    assert await rig.flush() == [
        ("emergency", "spo2_low", "firing"),
        ("county", "spo2_low", "firing"),
        ("village", "spo2_low", "firing"),
    ]


async def test_alert_payload_follows_the_contract(rig):
    alert = await rig.finding(Condition.BP_CRISIS, evidence={"systolic": 190})
    await rig.d.deliver_pending()
    [(tier, body)] = rig.channel.sent
    assert body["alert_id"] == alert.alert_id
    assert {
        k: body[k] for k in ("patient_id", "clinic", "tier", "condition", "severity", "state", "escalated_from")
    } == {
        "patient_id": "p-1",
        "clinic": "c1",
        "tier": "township",
        "condition": "bp_crisis",
        "severity": "high",
        "state": "firing",
        "escalated_from": None,
    }
    assert body["opened_at"] == "2024-03-15T07:30:00.000+08:00"
    assert body["evidence"] == {"systolic": 190}


# ---------------------------------------------------------------- one alert per (patient, condition)


async def test_repeat_finding_updates_instead_of_raising(rig, clock):
    first = await rig.finding(Condition.BP_CRISIS, evidence={"systolic": 185})
    await rig.flush()
    clock.advance(minutes=2)
    assert await rig.finding(Condition.BP_CRISIS, evidence={"systolic": 192}) is None
    assert await rig.flush() == []  # nobody is paged again
    [open_] = rig.store.active()
    assert open_.alert.alert_id == first.alert_id
    assert open_.alert.evidence == {"systolic": 192}
    assert open_.alert.opened_at == T0 and open_.alert.updated_at == T0 + timedelta(minutes=2)
    assert (rig.d.counters["raised"], rig.d.counters["updated"]) == (1, 1)


async def test_separate_alerts_per_patient_and_per_condition(rig):
    a = await rig.finding(Condition.BP_CRISIS, patient="p-1")
    b = await rig.finding(Condition.BP_CRISIS, patient="p-2")
    c = await rig.finding(Condition.BP_HIGH, patient="p-1")
    assert len({a.alert_id, b.alert_id, c.alert_id}) == 3
    assert len(rig.store.active()) == 3


async def test_higher_route_upgrades_the_same_alert_and_renotifies(rig):
    first = await rig.finding(Condition.HYPERGLYCEMIA_CRISIS)
    assert await rig.flush() == [("township", "hyperglycemia_crisis", "firing")]
    up = await rig.finding(Condition.HYPERGLYCEMIA_CRISIS, tier=Tier.COUNTY, severity=Severity.CRITICAL)
    assert up.alert_id == first.alert_id and (up.tier, up.severity) == (Tier.COUNTY, Severity.CRITICAL)
    assert await rig.flush() == [("county", "hyperglycemia_crisis", "firing")]
    # Dropping back to the default route does not downgrade it.
    assert await rig.finding(Condition.HYPERGLYCEMIA_CRISIS) is None
    assert rig.store.open_alert("p-1", Condition.HYPERGLYCEMIA_CRISIS).alert.tier is Tier.COUNTY


async def test_a_resolved_condition_that_returns_opens_a_new_alert(rig):
    first = await rig.finding(Condition.BP_HIGH)  # medium: does not latch
    await rig.finding(Condition.BP_HIGH, active=False)
    second = await rig.finding(Condition.BP_HIGH)
    assert second.alert_id != first.alert_id
    assert rig.store.get(first.alert_id).alert.state is AlertState.RESOLVED


async def test_clearing_a_condition_without_an_alert_does_nothing(rig):
    assert await rig.finding(Condition.HYPOGLYCEMIA, active=False) is None
    assert await rig.flush() == []


# ---------------------------------------------------------------- escalation


async def test_unacknowledged_alert_escalates_one_tier_after_its_timeout(rig):
    alert = await rig.finding(Condition.BP_CRISIS)  # township, 30 min
    await rig.flush()
    assert await rig.tick(minutes=29, seconds=59) == []
    assert await rig.tick(seconds=1) == [("county", "bp_crisis", "firing")]
    escalated = rig.store.get(alert.alert_id).alert
    assert (escalated.tier, escalated.escalated_from) == (Tier.COUNTY, Tier.TOWNSHIP)
    # County has 10 min, then the 120 bridge (and the county and the village doctor again).
    emergency = [
        ("emergency", "bp_crisis", "firing"),
        ("county", "bp_crisis", "firing"),
        ("village", "bp_crisis", "firing"),
    ]
    assert await rig.tick(minutes=10) == emergency
    assert rig.store.get(alert.alert_id).alert.escalated_from is Tier.COUNTY
    # Top of the ladder: no further tier, only a reminder every escalation.repeat_interval (10 min).
    assert await rig.tick(minutes=9) == []
    assert await rig.tick(minutes=1) == emergency
    assert rig.store.get(alert.alert_id).alert.tier is Tier.EMERGENCY


async def test_village_alert_escalates_after_4h(rig):
    alert = await rig.finding(Condition.BP_HIGH)
    await rig.flush()
    assert await rig.tick(hours=3, minutes=59) == []
    assert await rig.tick(minutes=1) == [("township", "bp_high", "firing")]
    escalated = rig.store.get(alert.alert_id).alert
    assert (escalated.tier, escalated.escalated_from) == (Tier.TOWNSHIP, Tier.VILLAGE)
    assert escalated.alert_id == alert.alert_id


async def test_high_severity_village_alert_escalates_after_30_min(rig):
    await rig.finding(Condition.BP_HIGH, severity=Severity.HIGH)
    await rig.flush()
    assert await rig.tick(minutes=29) == []
    assert await rig.tick(minutes=1) == [("township", "bp_high", "firing")]


async def test_severe_hypoglycemia_goes_from_township_to_emergency_after_10_min(rig):
    alert = await rig.finding(Condition.HYPOGLYCEMIA_SEVERE)
    await rig.flush()
    assert await rig.tick(minutes=9, seconds=59) == []
    assert await rig.tick(seconds=1) == [
        ("emergency", "hypoglycemia_severe", "firing"),
        ("county", "hypoglycemia_severe", "firing"),
        ("village", "hypoglycemia_severe", "firing"),
    ]
    a = rig.store.get(alert.alert_id).alert
    assert (a.tier, a.escalated_from) == (Tier.EMERGENCY, Tier.TOWNSHIP)


async def test_each_rung_counts_from_when_the_previous_was_due(rig):
    await rig.finding(Condition.BP_CRISIS)
    await rig.flush()
    # The timer ran late (gateway busy): noticed at 35 min instead of 30.
    assert await rig.tick(minutes=35) == [("county", "bp_crisis", "firing")]
    # County's 10 min started at 30, so emergency is due at 40, i.e. 5 min from now.
    assert await rig.tick(minutes=5) == [
        ("emergency", "bp_crisis", "firing"),
        ("county", "bp_crisis", "firing"),
        ("village", "bp_crisis", "firing"),
    ]


async def test_escalated_message_names_the_tier_it_came_from(rig):
    await rig.finding(Condition.BP_CRISIS)
    await rig.flush()
    rig.clock.advance(minutes=30)
    [escalated] = await rig.d.escalate_due()
    await rig.d.deliver_pending()
    [(tier, body)] = rig.channel.sent
    assert tier is Tier.COUNTY
    assert (body["tier"], body["escalated_from"], body["state"]) == ("county", "township", "firing")
    assert body["alert_id"] == escalated.alert_id


async def test_unacknowledged_emergency_alert_is_repeated(rig):
    await rig.finding(Condition.ASYSTOLE)
    await rig.flush()
    assert ("emergency", "asystole", "firing") in await rig.tick(minutes=10)


# ---------------------------------------------------------------- acknowledgement


async def test_ack_stops_escalation(rig):
    alert = await rig.finding(Condition.BP_CRISIS)
    await rig.flush()
    rig.clock.advance(minutes=5)
    acked = await rig.d.acknowledge(alert.alert_id, "dr-wang")
    assert acked.state is AlertState.ACKNOWLEDGED and acked.acknowledged_by == "dr-wang"
    assert await rig.flush() == [("township", "bp_crisis", "acknowledged")]
    assert await rig.tick(hours=5) == []
    assert rig.store.get(alert.alert_id).alert.tier is Tier.TOWNSHIP


async def test_ack_after_escalation_is_published_on_every_tier_notified(rig):
    alert = await rig.finding(Condition.HYPOGLYCEMIA_SEVERE)
    await rig.flush()
    await rig.tick(minutes=10)  # -> emergency + county
    await rig.d.acknowledge(alert.alert_id, "120-desk")
    sent = await rig.flush()
    assert sorted(t for t, _, s in sent if s == "acknowledged") == ["county", "emergency", "township", "village"]
    assert all(c == "hypoglycemia_severe" for _, c, _ in sent)


async def test_ack_of_unknown_or_already_acked_alert_is_ignored(rig):
    assert await rig.d.acknowledge("no-such-alert", "x") is None
    alert = await rig.finding(Condition.BP_CRISIS)
    assert await rig.d.acknowledge(alert.alert_id, "a") is not None
    await rig.flush()
    assert await rig.d.acknowledge(alert.alert_id, "b") is None
    assert await rig.flush() == []
    assert rig.store.get(alert.alert_id).alert.acknowledged_by == "a"


async def test_repeat_finding_after_ack_does_not_repage(rig):
    alert = await rig.finding(Condition.BP_CRISIS)
    await rig.d.acknowledge(alert.alert_id, "dr-li")
    await rig.flush()
    assert await rig.finding(Condition.BP_CRISIS) is None
    assert await rig.flush() == []
    assert rig.store.get(alert.alert_id).alert.state is AlertState.ACKNOWLEDGED


# ---------------------------------------------------------------- latching


def test_high_and_critical_latch():
    assert LATCHING == {Severity.HIGH, Severity.CRITICAL}


async def test_high_alert_stays_firing_after_the_condition_clears_until_acked(rig):
    alert = await rig.finding(Condition.BP_CRISIS)
    await rig.flush()
    rig.clock.advance(minutes=10)
    still = await rig.finding(Condition.BP_CRISIS, active=False)
    assert still.state is AlertState.FIRING
    assert await rig.flush() == []  # nothing to tell anyone yet
    assert rig.store.open_alert("p-1", Condition.BP_CRISIS).alert.state is AlertState.FIRING
    # A latched alert still climbs the ladder if nobody acknowledges it.
    assert await rig.tick(minutes=20) == [("county", "bp_crisis", "firing")]
    done = await rig.d.acknowledge(alert.alert_id, "dr-wang")
    assert done.state is AlertState.RESOLVED
    sent = await rig.flush()
    assert sent == [
        ("township", "bp_crisis", "acknowledged"),
        ("county", "bp_crisis", "acknowledged"),
        ("township", "bp_crisis", "resolved"),
        ("county", "bp_crisis", "resolved"),
    ]
    assert rig.store.open_alert("p-1", Condition.BP_CRISIS) is None


async def test_latched_alert_whose_condition_returns_is_not_resolved_by_the_ack(rig):
    alert = await rig.finding(Condition.HYPOGLYCEMIA_SEVERE)
    await rig.finding(Condition.HYPOGLYCEMIA_SEVERE, active=False)
    await rig.finding(Condition.HYPOGLYCEMIA_SEVERE)  # back again
    acked = await rig.d.acknowledge(alert.alert_id, "dr-wang")
    assert acked.state is AlertState.ACKNOWLEDGED


async def test_acknowledged_alert_resolves_when_the_condition_clears(rig):
    alert = await rig.finding(Condition.BP_CRISIS)
    await rig.d.acknowledge(alert.alert_id, "dr-wang")
    await rig.flush()
    resolved = await rig.finding(Condition.BP_CRISIS, active=False)
    assert resolved.state is AlertState.RESOLVED
    assert await rig.flush() == [("township", "bp_crisis", "resolved")]


async def test_medium_alert_resolves_as_soon_as_the_condition_clears(rig):
    await rig.finding(Condition.BP_HIGH)
    await rig.flush()
    resolved = await rig.finding(Condition.BP_HIGH, active=False)
    assert resolved.state is AlertState.RESOLVED
    assert await rig.flush() == [("village", "bp_high", "resolved")]
    assert await rig.tick(hours=5) == []  # a resolved alert never escalates


# ---------------------------------------------------------------- restart


async def test_restart_does_not_reraise_an_active_alert(rig):
    alert = await rig.finding(Condition.BP_CRISIS)
    assert await rig.flush() == [("township", "bp_crisis", "firing")]
    rig2 = rig.restart()
    rig.clock.advance(minutes=1)
    assert await rig2.finding(Condition.BP_CRISIS) is None
    assert await rig2.flush() == []
    assert [s.alert.alert_id for s in rig2.store.active()] == [alert.alert_id]
    assert rig2.d.counters["raised"] == 0


async def test_restart_keeps_the_escalation_due_time(rig):
    alert = await rig.finding(Condition.BP_CRISIS)
    await rig.flush()
    rig.clock.advance(minutes=20)
    rig2 = rig.restart()
    assert await rig2.tick(minutes=9) == []  # 29 min after opening
    assert await rig2.tick(minutes=1) == [("county", "bp_crisis", "firing")]
    assert rig2.store.get(alert.alert_id).alert.escalated_from is Tier.TOWNSHIP


async def test_restart_after_a_long_outage_escalates_what_became_due(rig):
    await rig.finding(Condition.HYPOGLYCEMIA_SEVERE)
    await rig.flush()
    rig2 = rig.restart()
    assert await rig2.tick(minutes=15) == [
        ("emergency", "hypoglycemia_severe", "firing"),
        ("county", "hypoglycemia_severe", "firing"),
        ("village", "hypoglycemia_severe", "firing"),
    ]


async def test_restart_keeps_a_latched_cleared_alert(rig):
    alert = await rig.finding(Condition.BP_CRISIS)
    await rig.finding(Condition.BP_CRISIS, active=False)
    await rig.flush()
    rig2 = rig.restart()
    done = await rig2.d.acknowledge(alert.alert_id, "dr-wang")
    assert done.state is AlertState.RESOLVED  # it remembered the condition had cleared


async def test_undelivered_alert_is_sent_after_restart(rig):
    rig.d.attach(None)  # no channel yet
    await rig.finding(Condition.ASYSTOLE)
    assert await rig.d.deliver_pending() == 0
    rig2 = rig.restart()
    assert await rig2.flush() == [
        ("emergency", "asystole", "firing"),
        ("county", "asystole", "firing"),
        ("village", "asystole", "firing"),
    ]


# ---------------------------------------------------------------- outbox


async def test_failed_deliveries_stay_pending_and_go_out_later_in_order(rig):
    rig.channel.down = True
    await rig.finding(Condition.BP_CRISIS, patient="p-1")
    await rig.finding(Condition.HYPOGLYCEMIA, patient="p-2")
    await rig.finding(Condition.ASYSTOLE, patient="p-3")
    assert await rig.d.deliver_pending() == 0
    assert len(rig.store.pending()) == 5
    assert rig.d.counters["delivery_failures"] == 1
    rig.channel.down = False
    assert await rig.d.deliver_pending() == 5
    assert [(t.value, p["patient_id"], p["condition"]) for t, p in rig.channel.sent] == [
        ("township", "p-1", "bp_crisis"),
        ("village", "p-2", "hypoglycemia"),
        ("emergency", "p-3", "asystole"),
        ("county", "p-3", "asystole"),
        ("village", "p-3", "asystole"),
    ]
    assert rig.store.pending() == []


async def test_delivery_failing_midway_resumes_where_it_stopped(rig):
    rig.d.attach(None)
    await rig.finding(Condition.BP_CRISIS, patient="p-1")
    await rig.finding(Condition.BP_CRISIS, patient="p-2")
    await rig.finding(Condition.BP_CRISIS, patient="p-3")
    rig.channel.fail_after = 1
    rig.d.attach(rig.channel)
    assert await rig.d.deliver_pending() == 1
    rig.channel.fail_after = None
    assert await rig.d.deliver_pending() == 2
    assert [p["patient_id"] for _, p in rig.channel.sent] == ["p-1", "p-2", "p-3"]  # none twice, none lost


async def test_transitions_queue_behind_earlier_ones(rig):
    rig.channel.down = True
    alert = await rig.finding(Condition.BP_CRISIS)
    await rig.d.acknowledge(alert.alert_id, "dr-wang")
    await rig.d.deliver_pending()
    rig.channel.down = False
    assert await rig.flush() == [("township", "bp_crisis", "firing"), ("township", "bp_crisis", "acknowledged")]


# ---------------------------------------------------------------- follow-up (back-filled readings)


async def test_follow_up_goes_to_village_at_low_severity(rig):
    alert = await rig.finding(Condition.HYPOGLYCEMIA_SEVERE, follow_up=True)
    assert (alert.tier, alert.severity) == (Tier.VILLAGE, Severity.LOW)
    assert alert.evidence.get("follow_up") is True
    assert await rig.flush() == [("village", "hypoglycemia_severe", "firing")]


@pytest.mark.parametrize("condition", [Condition.ASYSTOLE, Condition.BP_CRISIS, Condition.HYPOGLYCEMIA_SEVERE])
async def test_follow_up_never_escalates(rig, condition):
    alert = await rig.finding(condition, follow_up=True, tier=Tier.COUNTY, severity=Severity.CRITICAL)
    assert (alert.tier, alert.severity) == (Tier.VILLAGE, Severity.LOW)
    await rig.flush()
    assert await rig.tick(days=7) == []
    stored = rig.store.get(alert.alert_id)
    assert stored.escalate_at is None and stored.alert.tier is Tier.VILLAGE


async def test_live_finding_upgrades_an_open_follow_up_and_starts_the_ladder(rig):
    alert = await rig.finding(Condition.HYPOGLYCEMIA_SEVERE, follow_up=True)
    await rig.flush()
    up = await rig.finding(Condition.HYPOGLYCEMIA_SEVERE)
    assert up.alert_id == alert.alert_id and up.tier is Tier.TOWNSHIP
    assert await rig.flush() == [("township", "hypoglycemia_severe", "firing")]
    assert await rig.tick(minutes=10) == [
        ("emergency", "hypoglycemia_severe", "firing"),
        ("county", "hypoglycemia_severe", "firing"),
        ("village", "hypoglycemia_severe", "firing"),
    ]


async def test_follow_up_does_not_downgrade_a_live_alert(rig):
    live = await rig.finding(Condition.BP_CRISIS)
    await rig.flush()
    assert await rig.finding(Condition.BP_CRISIS, follow_up=True) is None
    a = rig.store.get(live.alert_id).alert
    assert (a.tier, a.severity) == (Tier.TOWNSHIP, Severity.HIGH)
    assert await rig.tick(minutes=30) == [("county", "bp_crisis", "firing")]


# ---------------------------------------------------------------- audit trail


async def test_every_transition_is_recorded(rig):
    alert = await rig.finding(Condition.BP_CRISIS)
    await rig.finding(Condition.BP_CRISIS)
    await rig.tick(minutes=30)
    await rig.d.acknowledge(alert.alert_id, "dr-wang")
    assert [t["what"] for t in rig.store.transitions(alert.alert_id)] == [
        "raised",
        "updated",
        "escalated",
        "acknowledged",
    ]
