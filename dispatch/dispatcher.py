"""The dispatcher: findings in, tiered alerts out; acknowledgement, escalation, resolution.

One active alert per (patient, condition): a repeat updates it, a route to a
higher tier or severity re-notifies. High and critical alerts latch: they stay
until acknowledged even when the value recovers. Every transition is saved
(with its outbox rows) before it is sent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from dispatch.alert_store import AlertStore, StoredAlert
from dispatch.escalation import EscalationSettings
from dispatch.routing import LATCHING, RoutingTable
from stream.models import Alert, AlertState, Finding, Tier, now_local

log = logging.getLogger("vitalgate.dispatch")

# Sends one alert payload on one tier's topic; raises if it could not be delivered.
AlertSender = Callable[[Tier, str], Awaitable[None]]
# Told of every transition (for the console, the demo printout, the web page).
AlertListener = Callable[[Alert, str], None]

TIMER_TICK_S = 1.0


def _rank(t: Tier) -> int:
    return list(Tier).index(t)


def _audience(tier: Tier) -> list[Tier]:
    # DOMAIN 2.1: emergency alerts also go to the county monitoring center.
    return [Tier.EMERGENCY, Tier.COUNTY] if tier is Tier.EMERGENCY else [tier]


class Dispatcher:
    def __init__(
        self,
        clinic: str,
        store: AlertStore,
        routing: RoutingTable,
        escalation: EscalationSettings,
        clock: Callable[[], datetime] = now_local,
    ) -> None:
        self.clinic = clinic
        self.store = store
        self.routing = routing
        self.escalation = escalation
        self.clock = clock
        self._sender: AlertSender | None = None
        self._listeners: list[AlertListener] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()  # set when there is something in the outbox
        self.counters: dict[str, int] = {"raised": 0, "updated": 0, "escalated": 0, "acknowledged": 0,
                                         "resolved": 0, "delivered": 0, "delivery_failures": 0}

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
            return self._resolve(current, "condition cleared", now)
        route = self.routing.route(f)
        evidence = {**f.evidence, **({"follow_up": True} if f.follow_up else {})}
        if current is None:
            alert = Alert(
                alert_id=uuid.uuid4().hex,
                patient_id=f.patient_id,
                clinic=self.clinic,
                tier=route.tier,
                condition=f.condition,
                severity=route.severity,
                opened_at=now,
                updated_at=now,
                evidence=evidence,
            )
            s = StoredAlert(alert, None, None, False, [])
            self._schedule(s, now, follow_up=f.follow_up)
            self.counters["raised"] += 1
            self._commit(s, "raised", {"finding_at": f.at.isoformat()}, _audience(alert.tier))
            return alert
        a = current.alert
        upgrade = _rank(route.tier) > _rank(a.tier) or route.severity.rank > a.severity.rank
        current.condition_cleared = False
        if upgrade and a.state is not AlertState.RESOLVED:
            a = a.model_copy(update={
                "tier": max(route.tier, a.tier, key=_rank),
                "severity": max(route.severity, a.severity, key=lambda s: s.rank),
                "state": AlertState.FIRING, "updated_at": now, "evidence": evidence,
            })
            current.alert = a
            self._schedule(current, now, follow_up=f.follow_up)
            self._commit(current, "upgraded", {"tier": a.tier.value, "severity": a.severity.value}, _audience(a.tier))
            return a
        # A repeat: refresh the evidence, do not notify again.
        current.alert = a.model_copy(update={"evidence": evidence, "updated_at": now})
        self.counters["updated"] += 1
        self._commit(current, "updated", {"finding_at": f.at.isoformat()}, [])
        return None

    def _schedule(self, s: StoredAlert, since: datetime, follow_up: bool = False) -> None:
        # Follow-up findings (back-filled readings) are for the next visit, not an escalation ladder.
        due = None if follow_up else self.escalation.due_at(s.alert, since)
        s.escalate_at, s.escalate_to = (due if due else (None, None))

    def _resolve(self, s: StoredAlert, why: str, now: datetime) -> Alert:
        s.alert = s.alert.model_copy(update={"state": AlertState.RESOLVED, "updated_at": now})
        s.escalate_at = s.escalate_to = None
        self.counters["resolved"] += 1
        self._commit(s, "resolved", {"why": why}, s.tiers_notified or [s.alert.tier])
        return s.alert

    async def acknowledge(self, alert_id: str, by: str) -> Alert | None:
        async with self._lock:
            s = self.store.get(alert_id)
            if s is None or s.alert.state is not AlertState.FIRING:
                return None
            now = self.clock()
            s.alert = s.alert.model_copy(update={"state": AlertState.ACKNOWLEDGED, "updated_at": now,
                                                 "acknowledged_by": by})
            s.escalate_at = s.escalate_to = None
            self.counters["acknowledged"] += 1
            self._commit(s, "acknowledged", {"by": by}, s.tiers_notified or [s.alert.tier])
            if s.condition_cleared:
                return self._resolve(s, "acknowledged after the condition had cleared", now)
            return s.alert

    async def escalate_due(self) -> list[Alert]:
        out: list[Alert] = []
        async with self._lock:
            now = self.clock()
            for s in self.store.due(now):
                to = s.escalate_to
                if to is None:
                    continue
                frm = s.alert.tier
                s.alert = s.alert.model_copy(update={"tier": to, "escalated_from": frm, "updated_at": now})
                # The next rung counts from the moment this one was due, not from when we noticed.
                self._schedule(s, s.escalate_at or now)
                self.counters["escalated"] += 1
                self._commit(s, "escalated", {"from": frm.value, "to": to.value}, _audience(to))
                out.append(s.alert)
        return out

    def _commit(self, s: StoredAlert, what: str, detail: dict, publish_to: list[Tier]) -> None:
        for t in publish_to:
            if t not in s.tiers_notified:
                s.tiers_notified.append(t)
        self.store.save(s, what, detail, publish_to)
        if publish_to:
            self._wake.set()
        log.info("alert %s", what, extra={"alert_id": s.alert.alert_id, "patient_id": s.alert.patient_id,
                                          "condition": s.alert.condition.value, "tier": s.alert.tier.value,
                                          "state": s.alert.state.value})
        for listener in self._listeners:
            listener(s.alert, what)

    # ------------------------------------------------------------ delivery

    async def deliver_pending(self) -> int:
        """Send every undelivered outbox row in order; stop at the first failure (retried later)."""
        sent = 0
        for outbox_id, tier, payload in self.store.pending():
            sender = self._sender
            if sender is None:
                break
            try:
                await sender(tier, payload)
            except Exception as exc:  # the channel is down: keep the row, try again later
                self.counters["delivery_failures"] += 1
                log.warning("alert delivery failed, will retry: %s", exc)
                break
            self.store.delivered(outbox_id, self.clock())
            self.counters["delivered"] += 1
            sent += 1
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Escalation timers and the delivery loop, until `stop` is set."""
        self._wake.set()  # whatever a previous run left in the outbox goes first
        while not stop.is_set():
            await self.escalate_due()
            if self._wake.is_set():
                self._wake.clear()
                await self.deliver_pending()
                if self.store.pending() and self._sender is not None:
                    await asyncio.sleep(1.0)  # failed: back off a little before retrying
                    self._wake.set()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=TIMER_TICK_S)
            except TimeoutError:
                pass
        await self.deliver_pending()  # flush on the way out
