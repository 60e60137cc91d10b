"""Notification channels beyond MQTT: HTTP webhooks (120 bridge, SMS/WeChat gateways) and the log.

MQTT stays one message per alert (the contract). Other channels get grouped
notifications: what happened to one patient's alerts at one tier within
`group_wait` goes out as one delivery. Every delivery is written to SQLite
before it is attempted and keeps its idempotency key across retries and
restarts (the `Idempotency-Key` header), so a receiver can drop the copies an
at-least-once retry produces. Retries back off exponentially and never give
up; after `alert_after_failures` failed attempts in a row the channel itself
raises a technical alert (`device_offline` with `evidence.channel`) on MQTT, resolved by the next
successful delivery.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dispatch.routing import Match
from stream.models import AlertState, Duration, Severity, Tier, iso, parse_duration
from stream.retry_backoff import DEFAULT_JITTER, capped_exponential, jittered

log = logging.getLogger("vitalgate.channels")
console_log = logging.getLogger("vitalgate.notify")

# Backoff between attempts of one delivery: initial * 2**(attempt-1), capped, minus up to 20 % jitter.
BACKOFF_INITIAL = parse_duration("2s")
BACKOFF_MAX = parse_duration("5m")
REQUEST_TIMEOUT = parse_duration("10s")
ALERT_AFTER_FAILURES = 3
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Technical alerts about channels use this condition name on the MQTT alert topics.
# A failing channel is a device of the box that went away: it uses the contract's technical
# condition `device_offline` (evidence.channel names it), so consumers see no new condition name.
CHANNEL_FAILED = "device_offline"


class Backoff(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    initial: Duration = BACKOFF_INITIAL
    max: Duration = BACKOFF_MAX
    jitter: float = Field(
        DEFAULT_JITTER, ge=0.0, lt=1.0, description="share randomly taken off each wait, so boxes do not retry in step"
    )

    def delay(self, attempts: int) -> timedelta:
        """Wait after the `attempts`-th failed attempt (1-based); never longer than configured."""
        secs = capped_exponential(attempts, self.initial.total_seconds(), self.max.total_seconds())
        return timedelta(seconds=jittered(secs, self.jitter))


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://", description="POSTed a JSON body per grouped notification")
    headers: dict[str, str] = Field(default_factory=dict, description="e.g. Authorization for the gateway")
    timeout: Duration = REQUEST_TIMEOUT


class ConsoleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    level: str = Field("WARNING", pattern=r"^(INFO|WARNING|ERROR)$")


class ChannelConfig(BaseModel):
    """One channel. It receives every notification at its `tiers` (an alert at `emergency` also
    counts for `county` and `village`, who are told too) plus the alerts a route sends it with
    `channels:`; `match` narrows either further."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    tiers: list[Tier] = Field(default_factory=list)
    match: Match = Match()
    webhook: WebhookConfig | None = None
    console: ConsoleConfig | None = None
    backoff: Backoff = Backoff()
    alert_after_failures: int = Field(ALERT_AFTER_FAILURES, ge=1, le=1000)
    failure_tier: Tier = Field(Tier.VILLAGE, description="MQTT tier topic for this channel's technical alert")

    @model_validator(mode="after")
    def _one_kind(self) -> ChannelConfig:
        kinds = [k for k in ("webhook", "console") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a channel is exactly one of webhook: {...} or console: {}")
        return self

    @property
    def kind(self) -> str:
        return "webhook" if self.webhook is not None else "console"

    def describe(self) -> str:
        return f"webhook {self.webhook.url}" if self.webhook else "console (log)"


class DeliveryFailed(Exception):
    """The channel did not take the delivery; it is retried later."""


@dataclass(frozen=True)
class Delivery:
    id: int
    channel: str
    idempotency_key: str
    body: str
    attempts: int


@dataclass(frozen=True)
class ChannelAlert:
    """A failing channel's technical alert. On MQTT it has the shape of every alert payload
    (`stream.models.Alert.to_public`) with no patient, the condition `CHANNEL_FAILED` and the
    channel in its evidence; it is not an `Alert` row, so it lives in the store's `channel_health`."""

    alert_id: str
    clinic: str
    tier: Tier
    state: AlertState
    opened_at: datetime
    updated_at: datetime
    evidence: dict[str, Any] = field(default_factory=dict)
    acknowledged_by: str | None = None

    @classmethod
    def raised(cls, clinic: str, tier: Tier, now: datetime, evidence: dict[str, Any]) -> ChannelAlert:
        return cls(f"chan-{uuid.uuid4().hex[:16]}", clinic, tier, AlertState.FIRING, now, now, evidence)

    def moved(self, state: AlertState, now: datetime, by: str | None = None) -> ChannelAlert:
        """The same alert acknowledged (`by`) or resolved at `now`."""
        return replace(self, state=state, updated_at=now, acknowledged_by=self.acknowledged_by if by is None else by)

    def to_public(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "patient_id": None,
            "clinic": self.clinic,
            "tier": self.tier.value,
            "condition": CHANNEL_FAILED,
            "severity": Severity.MEDIUM.value,
            "state": self.state.value,
            "opened_at": iso(self.opened_at),
            "updated_at": iso(self.updated_at),
            "escalated_from": None,
            "acknowledged_by": self.acknowledged_by,
            "evidence": self.evidence,
        }

    @classmethod
    def from_public(cls, body: dict[str, Any]) -> ChannelAlert:
        return cls(
            body["alert_id"],
            body["clinic"],
            Tier(body["tier"]),
            AlertState(body["state"]),
            datetime.fromisoformat(body["opened_at"]),
            datetime.fromisoformat(body["updated_at"]),
            body.get("evidence") or {},
            body.get("acknowledged_by"),
        )


class Sender(Protocol):
    async def send(self, d: Delivery) -> str: ...  # returns a short receipt ("HTTP 200")

    async def close(self) -> None: ...


class ConsoleSender:
    def __init__(self, cfg: ChannelConfig) -> None:
        self.level = getattr(logging, cfg.console.level if cfg.console else "WARNING")

    async def send(self, d: Delivery) -> str:
        body = json.loads(d.body)
        console_log.log(
            self.level,
            "notify %s",
            body.get("text", ""),
            extra={"channel": d.channel, "idempotency_key": d.idempotency_key},
        )
        return "logged"

    async def close(self) -> None:
        return None


class WebhookSender:
    def __init__(self, cfg: ChannelConfig) -> None:
        assert cfg.webhook is not None
        self.cfg = cfg.webhook
        self._session: Any = None

    async def send(self, d: Delivery) -> str:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.timeout.total_seconds()))
        headers = {
            **self.cfg.headers,
            "Content-Type": "application/json; charset=utf-8",
            IDEMPOTENCY_HEADER: d.idempotency_key,
        }
        try:
            async with self._session.post(self.cfg.url, data=d.body.encode("utf-8"), headers=headers) as resp:
                text = (await resp.text(errors="replace"))[:200]
                if 200 <= resp.status < 300:
                    return f"HTTP {resp.status}"
                raise DeliveryFailed(f"HTTP {resp.status} {text}".strip())
        except DeliveryFailed:
            raise
        except Exception as exc:  # connection refused, timeout, DNS: all retried the same way
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def make_sender(cfg: ChannelConfig) -> Sender:
    return WebhookSender(cfg) if cfg.webhook is not None else ConsoleSender(cfg)


def notification_text(clinic: str, patient_id: str, tier: str, items: list[dict]) -> str:
    """One short line for SMS/WeChat gateways: pseudonymous ids only, never names."""
    parts = []
    for it in items:
        a = it["alert"]
        esc = f" (from {a['escalated_from']})" if a.get("escalated_from") and it["event"] == "escalated" else ""
        parts.append(f"{a['condition']} {a['severity']} {a['state']}{esc}")
    return f"[vitalgate {clinic}] {patient_id} {tier}: " + "; ".join(parts)


def check_channel_references(data: dict[str, Any]) -> list[tuple[tuple, str]]:
    """Config checks across keys, on the raw YAML data: channel names unique, and every
    `channels:` a route names is defined. Returns (location, message) pairs."""
    out: list[tuple[tuple, str]] = []
    chans = data.get("channels") if isinstance(data, dict) else None
    names: dict[str, int] = {}
    for i, c in enumerate(chans if isinstance(chans, list) else []):
        if isinstance(c, dict) and isinstance(c.get("name"), str):
            if c["name"] in names:
                out.append(
                    (("channels", i, "name"), f"channel name {c['name']!r} already used by channels.{names[c['name']]}")
                )
            names.setdefault(c["name"], i)

    def walk(node: object, loc: tuple) -> None:
        if not isinstance(node, dict):
            return
        refs = node.get("channels")
        for j, name in enumerate(refs if isinstance(refs, list) else []):
            if isinstance(name, str) and name not in names:
                known = ", ".join(sorted(names)) or "none defined"
                out.append(((*loc, "channels", j), f"no channel named {name!r} under channels: ({known})"))
        kids = node.get("routes")
        for k, child in enumerate(kids if isinstance(kids, list) else []):
            walk(child, (*loc, "routes", k))

    walk(data.get("routing") if isinstance(data, dict) else None, ("routing",))
    return out
