"""The dispatcher: findings in, tiered alerts out; acknowledgement, escalation, resolution.

One active alert per (patient, condition): a repeat updates it, a route to a
higher tier or severity re-notifies. High and critical alerts latch: they stay
until acknowledged even when the value recovers. Every transition is saved
(with its outbox rows) before it is sent.

Around that core:
- routing is a declarative tree (`dispatch/routing.py`), decided once when an
  alert opens and kept with it;
- the ladder (`dispatch/escalation.py`) escalates unacknowledged alerts and,
  while one is firing and unacknowledged, repeats it every `repeat_interval`
  (at the top of the ladder every `escalation.repeat_interval`);
- holds (`dispatch/suppression.py`): a snooze, a silence or an inhibiting
  alert keeps an alert from being sent or escalated; the hold is re-checked on
  every timer tick, so silences that start or end and snoozes that run out
  take effect within a second, and after a restart;
- channels (`dispatch/channels.py`): besides the MQTT tier topics, webhooks and
  the log get grouped notifications, each delivery retried with backoff under
  a fixed idempotency key; a failing channel raises a technical alert.

Clock: every due time is from `clock` (clinic time, +08:00), stored in SQLite.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from dispatch.alert_store import AlertStore, Note, StoredAlert
from dispatch.channels import ChannelAlert, ChannelConfig, DeliveryFailed, Sender, make_sender, notification_text
from dispatch.escalation import EscalationSettings
from dispatch.routing import LATCHING, MatchContext, Route, RoutingTable, RoutingTree, tier_rank
from dispatch.suppression import (
    DEFAULT_INHIBIT_RULES,
    InhibitRule,
    Silence,
    SilenceSpec,
    config_silence_id,
    equal_values,
)
from stream.models import Alert, AlertState, Condition, Finding, Tier, iso, now_local

log = logging.getLogger("vitalgate.dispatch")

# Sends one alert payload on one tier's topic; raises if it could not be delivered.
AlertSender = Callable[[Tier, str], Awaitable[None]]
# Told of every transition (for the console, the demo printout, the web page).
AlertListener = Callable[[Alert, str], None]

TIMER_TICK_S = 1.0
CHANNEL_IDLE_S = 1.0  # a channel worker looks for new deliveries at least this often
SHUTDOWN_CHANNEL_FLUSH_S = 3.0  # on stop, channels get this long to send what is due; the rest waits in SQLite


class _LabelledPatient(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, Any]: ...


class DispatchConfig(Protocol):
    """What the dispatcher reads of the gateway config (box.config.GatewayConfig)."""

    @property
    def clinic(self) -> str: ...
    @property
    def patients(self) -> Sequence[_LabelledPatient]: ...
    @property
    def routes(self) -> Mapping[Condition, Route]: ...
    @property
    def routing(self) -> RoutingTree: ...
    @property
    def escalation(self) -> EscalationSettings: ...
    @property
    def inhibit_rules(self) -> Sequence[InhibitRule] | None: ...
    @property
    def channels(self) -> Sequence[ChannelConfig]: ...
    @property
    def silences(self) -> Sequence[SilenceSpec]: ...


def _rank(t: Tier) -> int:
    return tier_rank(t)


class Dispatcher:
    def __init__(
        self,
        clinic: str,
        store: AlertStore,
        routing: RoutingTable,
        escalation: EscalationSettings,
        clock: Callable[[], datetime] = now_local,
        *,
        inhibit_rules: Sequence[InhibitRule] | None = None,
        channels: Sequence[ChannelConfig] = (),
        silences: Sequence[SilenceSpec] = (),
    ) -> None:
        self.clinic = clinic
        self.store = store
        self.routing = routing
        self.escalation = escalation
        self.clock = clock
        self.inhibit_rules = list(DEFAULT_INHIBIT_RULES if inhibit_rules is None else inhibit_rules)
        # Rules whose `equal` leaves out patient_id (e.g. [village]) compare alerts across patients.
        self._cross_patient = any("patient_id" not in r.equal for r in self.inhibit_rules)
        self.channels = {c.name: c for c in channels}
        self._senders: dict[str, Sender] = {}
        self._sender: AlertSender | None = None
        self._listeners: list[AlertListener] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()  # set when there is something in the outbox
        self._delivery_failed = False  # the last deliver_pending stopped at a failed send
        self._channel_wake: dict[str, asyncio.Event] = {n: asyncio.Event() for n in self.channels}
        self.counters: dict[str, int] = {
            "raised": 0,
            "updated": 0,
            "escalated": 0,
            "acknowledged": 0,
            "resolved": 0,
            "delivered": 0,
            "delivery_failures": 0,
            "repeated": 0,
            "held": 0,
            "released": 0,
            "snoozed": 0,
            "channel_delivered": 0,
            "channel_failures": 0,
        }
        self._sync_config_silences(silences)
        self._silences = self.store.silences()

    @classmethod
    def from_config(
        cls, config: DispatchConfig, store: AlertStore, clock: Callable[[], datetime] = now_local
    ) -> Dispatcher:
        """Everything the gateway config says about dispatch."""
        routing = RoutingTable(
            dict(config.routes), tree=config.routing, labels={p.id: dict(p.labels) for p in config.patients}
        )
        return cls(
            config.clinic,
            store,
            routing,
            config.escalation,
            clock=clock,
            inhibit_rules=config.inhibit_rules,
            channels=config.channels,
            silences=config.silences,
        )

    def attach(self, sender: AlertSender | None) -> None:
        """Connect (or with None, disconnect) the channel; pending deliveries go out on connect."""
        self._sender = sender
        if sender is not None:
            self._wake.set()

    def listen(self, listener: AlertListener) -> None:
        self._listeners.append(listener)

    # ------------------------------------------------------------ decisions

    async def handle(self, finding: Finding) -> Alert | None:
        async with self._lock:
            return self._apply(finding)

    def _apply(self, f: Finding) -> Alert | None:
        now = self.clock()
        current = self.store.open_alert(f.patient_id, f.condition)
        if not f.active:
            if current is None:
                return None
            a = current.alert
            if a.state is AlertState.FIRING and a.severity in LATCHING:
                current.condition_cleared = True  # latched: stays until acknowledged
                self._commit(current, "condition_cleared", {"at": f.at.isoformat()}, [])
                return a
            resolved = self._resolve(current, "condition cleared", now)
            self._reconcile(now, f.patient_id)
            return resolved
        decision = self.routing.decide(f, now)
        evidence = {**f.evidence, **({"follow_up": True} if f.follow_up else {})}
        if current is None:
            alert = Alert(
                alert_id=uuid.uuid4().hex,
                patient_id=f.patient_id,
                clinic=self.clinic,
                tier=decision.tier,
                condition=f.condition,
                severity=decision.severity,
                opened_at=now,
                updated_at=now,
                evidence=evidence,
            )
            s = StoredAlert(alert, None, None, False, [], route=decision.stored())
            self.counters["raised"] += 1
            self._notify_or_hold(s, "raised", {"finding_at": f.at.isoformat(), "route": list(decision.path)}, now)
            self._reconcile(now, f.patient_id, skip=alert.alert_id)
            return alert
        a = current.alert
        upgrade = _rank(decision.tier) > _rank(a.tier) or decision.severity.rank > a.severity.rank
        current.condition_cleared = False
        if upgrade and a.state is not AlertState.RESOLVED:
            a = a.model_copy(
                update={
                    "tier": max(decision.tier, a.tier, key=_rank),
                    "severity": max(decision.severity, a.severity, key=lambda s: s.rank),
                    "state": AlertState.FIRING,
                    "updated_at": now,
                    "evidence": evidence,
                }
            )
            current.alert = a
            route = dict(current.route)
            route["follow_up"] = f.follow_up
            route["channels"] = list(dict.fromkeys([*route.get("channels", []), *decision.channels]))
            current.route = route
            if current.suppressed == "snooze":  # new information breaks through a snooze
                current.suppressed, current.snoozed_until = None, None
            self._notify_or_hold(current, "upgraded", {"tier": a.tier.value, "severity": a.severity.value}, now)
            self._reconcile(now, f.patient_id, skip=a.alert_id)
            return a
        # A repeat: refresh the evidence, do not notify again.
        current.alert = a.model_copy(update={"evidence": evidence, "updated_at": now})
        self.counters["updated"] += 1
        self._commit(current, "updated", {"finding_at": f.at.isoformat()}, [])
        return None

    def _notify_or_hold(self, s: StoredAlert, what: str, detail: dict, now: datetime) -> None:
        """Send a raise/upgrade to the alert's audience, unless a snooze, silence or inhibition holds it."""
        hold = self._hold_reason(s, now, self.store.active(None if self._cross_patient else s.alert.patient_id))
        if hold is not None:
            self._hold(s, hold)
            self.counters["held"] += 1
            self._commit(s, what, {**detail, "held": hold}, [])
            return
        s.suppressed, s.notify_pending = None, False
        self._schedule(s, now)
        self._commit(s, what, detail, self.escalation.audience(s.alert.tier))

    def _hold(self, s: StoredAlert, reason: str) -> None:
        s.suppressed = reason
        s.notify_pending = s.alert.state is AlertState.FIRING
        s.escalate_at = s.escalate_to = None
        s.repeat_at = None

    def _schedule(self, s: StoredAlert, since: datetime, follow_up: bool | None = None) -> None:
        # Follow-up findings (back-filled readings) are for the next visit, not an escalation ladder.
        fu = s.route.get("follow_up", False) if follow_up is None else follow_up
        due = None if fu else self.escalation.due_at(s.alert, since)
        s.escalate_at, s.escalate_to = due if due else (None, None)
        s.repeat_at = None if fu else self._next_repeat(s)

    def _next_repeat(self, s: StoredAlert) -> datetime | None:
        """Next reminder while firing and unacknowledged: the route's repeat_interval, and at the
        top of the ladder (nothing left to escalate to) at most escalation.repeat_interval."""
        if s.alert.state is not AlertState.FIRING:
            return None
        interval = timedelta(
            seconds=float(s.route.get("repeat_interval", self.routing.tree.repeat_interval.total_seconds()))
        )
        if s.escalate_at is None:
            interval = min(interval, self.escalation.repeat_interval)
        if interval <= timedelta(0):
            return None
        at = self.clock() + interval
        if s.escalate_at is not None and at >= s.escalate_at:
            return None  # the escalation tells someone new first
        return at

    def _resolve(self, s: StoredAlert, why: str, now: datetime) -> Alert:
        s.alert = s.alert.model_copy(update={"state": AlertState.RESOLVED, "updated_at": now})
        s.escalate_at = s.escalate_to = None
        s.repeat_at = s.snoozed_until = None
        s.suppressed, s.notify_pending = None, False
        self.counters["resolved"] += 1
        # Only those who were told hear that it resolved (a held alert told nobody).
        self._commit(s, "resolved", {"why": why}, list(s.tiers_notified))
        return s.alert

    # ------------------------------------------------------------ holds: snooze, silence, inhibition

    def _ctx(self, a: Alert, now: datetime) -> MatchContext:
        return MatchContext(a.condition, a.severity, a.tier, a.patient_id, self.routing.labels_for(a.patient_id), now)

    def _hold_reason(self, s: StoredAlert, now: datetime, patient_active: list[StoredAlert]) -> str | None:
        a = s.alert
        if a.state is not AlertState.FIRING:
            return None
        if s.snoozed_until is not None and s.snoozed_until > now:
            return "snooze"
        ctx = self._ctx(a, now)
        for sil in self._silences:
            if sil.holds(ctx):
                return f"silence:{sil.id}"
        labels = ctx.labels
        for rule in self.inhibit_rules:
            if not rule.target.matches(ctx):
                continue
            want = equal_values(rule.equal, a.patient_id, labels)
            for other in patient_active:
                o = other.alert
                if o.alert_id == a.alert_id or o.state is AlertState.RESOLVED:
                    continue
                octx = self._ctx(o, now)
                if rule.source.matches(octx) and equal_values(rule.equal, o.patient_id, octx.labels) == want:
                    return f"inhibited:{o.alert_id}"
        return None

    def _reconcile(self, now: datetime, patient_id: str | None = None, skip: str | None = None) -> None:
        """Bring every firing alert's hold in line with snoozes, silences and inhibiting alerts now."""
        active = self.store.active(None if self._cross_patient else patient_id)
        by_patient: dict[str, list[StoredAlert]] = {}
        for s in active:
            by_patient.setdefault(s.alert.patient_id, []).append(s)
        for s in active:
            if s.alert.alert_id == skip or s.alert.state is not AlertState.FIRING:
                continue
            want = self._hold_reason(s, now, active if self._cross_patient else by_patient[s.alert.patient_id])
            if want == s.suppressed:
                continue
            if want is not None:
                was = s.suppressed
                self._hold(s, want)
                self.counters["held"] += 1
                self._commit(s, "held", {"by": want, **({"was": was} if was else {})}, [])
                continue
            was = s.suppressed
            # Tell the tier again after a snooze or silence (a reminder); after an inhibition
            # only if the tier never heard of it.
            tell = s.notify_pending or s.alert.tier not in s.tiers_notified
            if was and was.startswith("inhibited:"):
                tell = s.alert.tier not in s.tiers_notified
            s.suppressed, s.notify_pending = None, False
            if was == "snooze":
                s.snoozed_until = None
            s.alert = s.alert.model_copy(update={"updated_at": now})
            self._schedule(s, now)
            self.counters["released"] += 1
            self._commit(s, "released", {"was": was}, self.escalation.audience(s.alert.tier) if tell else [])

    async def snooze(self, alert_id: str, by: str, duration: timedelta, why: str = "") -> Alert | None:
        """Hold a firing alert for `duration` (at most escalation.max_snooze); it is sent again when it runs out."""
        async with self._lock:
            s = self.store.get(alert_id)
            if s is None or s.alert.state is not AlertState.FIRING:
                return None
            now = self.clock()
            d = min(duration, self.escalation.max_snooze)
            s.snoozed_until = now + d
            s.alert = s.alert.model_copy(update={"updated_at": now})
            self._hold(s, "snooze")
            s.notify_pending = True
            self.counters["snoozed"] += 1
            self._commit(
                s,
                "snoozed",
                {
                    "by": by,
                    "until": iso(s.snoozed_until),
                    "why": why,
                    **({"capped_from_s": duration.total_seconds()} if d != duration else {}),
                },
                [],
            )
            return s.alert

    def _sync_config_silences(self, specs: Sequence[SilenceSpec]) -> None:
        now = self.clock()
        stored = {s.id: s for s in self.store.silences()}
        wanted = set()
        for spec in specs:
            sid = config_silence_id(spec)
            wanted.add(sid)
            # Already there: keep it as it is (also if someone ended it early), unless it had
            # ended because it was taken out of the file and now is back.
            if sid in stored and stored[sid].expired_by != "config":
                continue
            self.store.put_silence(self._silence_from(spec, sid, "config", now))
        for sid, sil in stored.items():  # removed from the file: ended, kept for the audit trail
            if sil.source == "config" and sid not in wanted and sil.expired_at is None:
                sil.expired_at, sil.expired_by = now, "config"
                self.store.put_silence(sil)

    def _silence_from(self, spec: SilenceSpec, sid: str, source: str, now: datetime) -> Silence:
        starts = spec.starts_at or now
        ends = spec.ends_at or (starts + spec.duration if spec.duration else None)
        return Silence(
            id=sid,
            match=spec.match,
            starts_at=starts,
            ends_at=ends,
            created_by=spec.by,
            created_at=now,
            why=spec.why,
            include_critical=spec.include_critical,
            source=source,
        )

    async def add_silence(self, spec: SilenceSpec, source: str) -> Silence:
        """Create a silence (idempotent on `id`); it applies at once. API silences must end."""
        async with self._lock:
            if spec.ends_at is None and spec.duration is None:
                raise ValueError("a silence needs ends_at or duration")
            now = self.clock()
            if spec.id:
                for sil in self._silences:
                    if sil.id == spec.id:
                        return sil
            sil = self._silence_from(spec, spec.id or uuid.uuid4().hex[:16], source, now)
            self.store.put_silence(sil)
            self._silences = self.store.silences()
            log.info("silence created", extra={"silence_id": sil.id, "by": sil.created_by, "why": sil.why})
            self._reconcile(now)
            return sil

    async def expire_silence(self, silence_id: str, by: str) -> Silence | None:
        async with self._lock:
            now = self.clock()
            for sil in self._silences:
                if sil.id == silence_id:
                    if sil.expired_at is None or sil.expired_at > now:
                        sil.expired_at, sil.expired_by = now, by
                        self.store.put_silence(sil)
                        log.info("silence expired", extra={"silence_id": sil.id, "by": by})
                    self._silences = self.store.silences()
                    self._reconcile(now)
                    return sil
            return None

    def silences(self, active_only: bool = False) -> list[Silence]:
        now = self.clock()
        return [s for s in self._silences if not active_only or s.active(now)]

    # ------------------------------------------------------------ acknowledgement, escalation, repeats

    async def acknowledge(self, alert_id: str, by: str) -> Alert | None:
        async with self._lock:
            s = self.store.get(alert_id)
            if s is None:
                self._ack_channel_alert(alert_id, by)
                return None
            if s.alert.state is not AlertState.FIRING:
                return None
            now = self.clock()
            s.alert = s.alert.model_copy(
                update={"state": AlertState.ACKNOWLEDGED, "updated_at": now, "acknowledged_by": by}
            )
            s.escalate_at = s.escalate_to = None
            s.repeat_at = s.snoozed_until = None
            s.suppressed, s.notify_pending = None, False
            self.counters["acknowledged"] += 1
            self._commit(s, "acknowledged", {"by": by}, list(s.tiers_notified))
            if s.condition_cleared:
                resolved = self._resolve(s, "acknowledged after the condition had cleared", now)
                self._reconcile(now, s.alert.patient_id)
                return resolved
            return s.alert

    async def escalate_due(self) -> list[Alert]:
        """The timer: holds that start or end, escalations, repeats, channel groups. Returns the escalated."""
        out: list[Alert] = []
        async with self._lock:
            now = self.clock()
            self._reconcile(now)
            for s in self.store.due(now):
                to = s.escalate_to
                if to is None:
                    continue
                frm = s.alert.tier
                s.alert = s.alert.model_copy(update={"tier": to, "escalated_from": frm, "updated_at": now})
                # The next rung counts from the moment this one was due, not from when we noticed.
                self._schedule(s, s.escalate_at or now)
                self.counters["escalated"] += 1
                self._commit(s, "escalated", {"from": frm.value, "to": to.value}, self.escalation.audience(to))
                out.append(s.alert)
            for s in self.store.repeats_due(now):
                if s.suppressed is not None:
                    continue
                s.alert = s.alert.model_copy(update={"updated_at": now})
                s.repeat_at = self._next_repeat(s)
                self.counters["repeated"] += 1
                self._commit(s, "repeated", {"tier": s.alert.tier.value}, self.escalation.audience(s.alert.tier))
            self._group_notes(now)
        return out

    def _commit(self, s: StoredAlert, what: str, detail: dict, publish_to: list[Tier]) -> None:
        for t in publish_to:
            if t not in s.tiers_notified:
                s.tiers_notified.append(t)
        self.store.save(s, what, detail, publish_to, self._notes_for(s, what, publish_to))
        if publish_to:
            self._wake.set()
        log.info(
            "alert %s",
            what,
            extra={
                "alert_id": s.alert.alert_id,
                "patient_id": s.alert.patient_id,
                "condition": s.alert.condition.value,
                "tier": s.alert.tier.value,
                "state": s.alert.state.value,
            },
        )
        for listener in self._listeners:
            listener(s.alert, what)

    # ------------------------------------------------------------ channels: notes -> grouped deliveries

    def _notes_for(self, s: StoredAlert, what: str, publish_to: list[Tier]) -> list[Note]:
        if not publish_to or not self.channels:
            return []
        a = s.alert
        ctx = self._ctx(a, self.clock())
        routed = set(s.route.get("channels", []))
        gw = timedelta(seconds=float(s.route.get("group_wait", self.routing.tree.group_wait.total_seconds())))
        gi = float(s.route.get("group_interval", self.routing.tree.group_interval.total_seconds()))
        payload = json.dumps({"event": what, "alert": a.to_public()}, ensure_ascii=False)
        notes = []
        for c in self.channels.values():
            if not (set(c.tiers) & set(publish_to) or c.name in routed):
                continue
            if not c.match.matches(ctx):
                continue
            notes.append(
                Note(c.name, f"{a.patient_id}/{a.tier.value}", a.alert_id, what, payload, a.updated_at + gw, gi)
            )
        return notes

    def _group_notes(self, now: datetime) -> None:
        """Group waiting notes per (channel, patient, tier) into deliveries once their wait is over."""
        groups: dict[tuple[str, str], list] = {}
        for row in self.store.pending_notes():
            groups.setdefault((row[1], row[2]), []).append(row)
        for (channel, key), rows in groups.items():
            if channel not in self.channels:
                continue  # channel removed from the config: its notes stay for the audit trail
            # group_wait after the first note, and never sooner than group_interval after the last delivery.
            ready_at = min(r[6] for r in rows)
            last = self.store.group_last_sent(channel, key)
            if last is not None:
                ready_at = max(ready_at, last + timedelta(seconds=min(r[7] for r in rows)))
            if now < ready_at:
                continue
            items = [json.loads(r[4]) for r in rows]
            patient_id, tier = key.rsplit("/", 1)
            alert_ids = list(dict.fromkeys(it["alert"]["alert_id"] for it in items))
            body = {
                "clinic": self.clinic,
                "channel": channel,
                "patient_id": patient_id,
                "tier": tier,
                "created_at": iso(now),
                "notifications": items,
                "text": notification_text(self.clinic, patient_id, tier, items),
            }
            self.store.make_delivery(channel, key, [r[0] for r in rows], alert_ids, body, now)
            self._channel_wake[channel].set()

    async def deliver_channel(self, name: str) -> bool:
        """Attempt the channel's oldest due delivery once. True if something was attempted."""
        cfg = self.channels[name]
        nxt = self.store.next_delivery(name)
        if nxt is None:
            return False
        d, due = nxt
        now = self.clock()
        if due > now:
            return False
        sender = self._senders.get(name)
        if sender is None:
            sender = self._senders[name] = make_sender(cfg)
        try:
            receipt = await sender.send(d)
        except DeliveryFailed as exc:
            await self._channel_failed(cfg, d.id, d.attempts + 1, str(exc))
            return True
        except Exception as exc:  # a sender bug counts as a failed attempt, never as a silent loop
            log.exception("channel sender error", extra={"channel": name})
            await self._channel_failed(cfg, d.id, d.attempts + 1, f"{type(exc).__name__}: {exc}")
            return True
        async with self._lock:
            now = self.clock()
            self.store.delivery_succeeded(d.id, now, receipt)
            self.counters["channel_delivered"] += 1
            failures, _, alert = self.store.channel_health(name)
            if failures or alert:
                self._channel_recovered(cfg, alert, now)
        return True

    async def _channel_failed(self, cfg: ChannelConfig, delivery_id: int, attempts: int, error: str) -> None:
        async with self._lock:
            now = self.clock()
            self.store.delivery_failed(delivery_id, error, now + cfg.backoff.delay(attempts))
            self.counters["channel_failures"] += 1
            failures, _, alert = self.store.channel_health(cfg.name)
            failures += 1
            log.warning(
                "channel delivery failed (attempt %d), will retry: %s", attempts, error, extra={"channel": cfg.name}
            )
            if alert is None and failures >= cfg.alert_after_failures:
                alert = ChannelAlert.raised(
                    self.clinic,
                    cfg.failure_tier,
                    now,
                    {
                        "channel": cfg.name,
                        "kind": cfg.kind,
                        "target": cfg.describe(),
                        "failed_attempts": failures,
                        "last_error": error,
                        "pending_deliveries": self.store.pending_deliveries(cfg.name),
                    },
                )
                log.error("channel is failing: technical alert raised", extra={"channel": cfg.name, "error": error})
                self._publish_channel_alert(alert, "raised")
            self.store.set_channel_health(cfg.name, failures, error, alert)

    def _channel_recovered(self, cfg: ChannelConfig, alert: ChannelAlert | None, now: datetime) -> None:
        if alert is not None:
            alert = alert.moved(AlertState.RESOLVED, now)
            log.warning("channel recovered: technical alert resolved", extra={"channel": cfg.name})
            self._publish_channel_alert(alert, "resolved")
        self.store.set_channel_health(cfg.name, 0, None, None)

    def _publish_channel_alert(self, alert: ChannelAlert, what: str) -> None:
        self.store.enqueue(
            alert.alert_id, [alert.tier], json.dumps(alert.to_public(), ensure_ascii=False), self.clock()
        )
        self._wake.set()

    def _ack_channel_alert(self, alert_id: str, by: str) -> ChannelAlert | None:
        """Acknowledge a channel's technical alert; it still resolves only when the channel delivers again."""
        found = self.store.channel_alert(alert_id)
        if found is None:
            return None
        channel, alert = found
        if alert.state is not AlertState.FIRING:
            return None
        alert = alert.moved(AlertState.ACKNOWLEDGED, self.clock(), by)
        failures, err, _ = self.store.channel_health(channel)
        self.store.set_channel_health(channel, failures, err, alert)
        self._publish_channel_alert(alert, "acknowledged")
        return alert

    async def acknowledge_technical(self, alert_id: str, by: str) -> ChannelAlert | None:
        async with self._lock:
            return self._ack_channel_alert(alert_id, by)

    async def _channel_worker(self, name: str, stop: asyncio.Event) -> None:
        wake = self._channel_wake[name]
        while not stop.is_set():
            try:
                if await self.deliver_channel(name):
                    continue
            except Exception:  # a bug in one channel must not stop the others or the MQTT loop
                log.exception("channel worker error", extra={"channel": name})
            nxt = self.store.next_delivery(name)
            timeout = CHANNEL_IDLE_S
            if nxt is not None:
                timeout = max(0.05, min(timeout, (nxt[1] - self.clock()).total_seconds()))
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), timeout=timeout)
            except TimeoutError:
                pass

    def status(self) -> dict[str, Any]:
        """For the retained status message: holds and channel health."""
        active = self.store.active()
        chans = {}
        for name, cfg in self.channels.items():
            failures, err, alert = self.store.channel_health(name)
            chans[name] = {
                "kind": cfg.kind,
                "state": "failing" if alert and alert.state is not AlertState.RESOLVED else "ok",
                "failures_in_row": failures,
                "last_error": err,
                "pending": self.store.pending_deliveries(name),
            }
        return {
            "silences_active": len(self.silences(active_only=True)),
            "held": {
                k: sum(1 for s in active if (s.suppressed or "").split(":")[0] == k)
                for k in ("snooze", "silence", "inhibited")
            },
            "channels": chans,
        }

    # ------------------------------------------------------------ delivery (MQTT)

    async def deliver_pending(self) -> int:
        """Send every undelivered outbox row in order; stop at the first failure (retried later)."""
        sent = 0
        self._delivery_failed = False
        for outbox_id, tier, payload in self.store.pending():
            sender = self._sender
            if sender is None:
                break
            try:
                await sender(tier, payload)
            except Exception as exc:  # the channel is down: keep the row, try again later
                self._delivery_failed = True
                self.counters["delivery_failures"] += 1
                log.warning("alert delivery failed, will retry: %s", exc)
                break
            self.store.delivered(outbox_id, self.clock())
            self.counters["delivered"] += 1
            sent += 1
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Timers, the MQTT delivery loop and one worker per channel, until `stop` is set."""
        worker_stop = asyncio.Event()
        workers = [
            asyncio.create_task(self._channel_worker(n, worker_stop), name=f"channel-{n}") for n in self.channels
        ]
        self._wake.set()  # whatever a previous run left in the outbox goes first
        while not stop.is_set():
            await self.escalate_due()
            if self._wake.is_set():
                self._wake.clear()
                await self.deliver_pending()
                # Back off only after a failed send. Rows staged while we were sending set `_wake`
                # and go out on the next turn: under load, treating them as a failure held new
                # critical alerts for a second (bench/load.py p99 ≈ 660 ms, max 1.0 s).
                if self._delivery_failed and self._sender is not None:
                    await asyncio.sleep(1.0)
                    self._wake.set()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=TIMER_TICK_S)
            except TimeoutError:
                pass
        await self.escalate_due()
        await self.deliver_pending()  # flush on the way out
        if workers:
            # Give channels a moment to send what is due; the rest stays in SQLite for the next start.
            for ev in self._channel_wake.values():
                ev.set()
            await asyncio.sleep(0)
            deadline = asyncio.get_running_loop().time() + SHUTDOWN_CHANNEL_FLUSH_S
            while asyncio.get_running_loop().time() < deadline and any(
                (n := self.store.next_delivery(c)) is not None and n[1] <= self.clock() for c in self.channels
            ):
                await asyncio.sleep(0.05)
            worker_stop.set()
            for ev in self._channel_wake.values():
                ev.set()
            await asyncio.gather(*workers, return_exceptions=True)
        for sender in self._senders.values():
            await sender.close()
        await self.deliver_pending()  # a channel's technical alert raised during the flush
