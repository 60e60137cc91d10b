"""Control messages from people: snoozes and silences over MQTT (acks keep their contract topic).

Topics (QoS 1, JSON, UTF-8):
- `vg/{clinic}/snooze`  `{"alert_id": "...", "by": "dr-li", "duration": "30m", "why": "seeing the patient"}`
- `vg/{clinic}/silence` create: `{"id": "optional-idempotency-id", "match": {"patient": "p-0001",
  "condition": ["lead_off"]}, "duration": "2h" | "ends_at": "...", "by": "tech-wang", "why": "patch replaced"}`
- `vg/{clinic}/silence` end early: `{"expire": "<silence id>", "by": "tech-wang"}`

The same operations are on the HTTP API (`dispatch/http_api.py`). A bad
message is answered with a reason (the gateway counts and logs it), never a crash.
QoS 1 may deliver twice: a snooze is idempotent by nature, a silence by its `id`.
A silence over MQTT never includes critical alerts and lasts at most 24 h.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dispatch.suppression import SilenceSpec
from stream.models import Duration

if TYPE_CHECKING:
    from dispatch.dispatcher import Dispatcher

CONTROL_TOPICS = ("snooze", "silence")
MQTT_SILENCE_MAX = timedelta(hours=24)


class HttpConfig(BaseModel):
    """`http:` in the config: the API of `dispatch/http_api.py` (and later the village doctor's page)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bind: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    token: str = Field(min_length=16, max_length=200, description="per-clinic bearer token; at least 16 characters")
    tls_cert: str | None = Field(None, description="PEM certificate: serve HTTPS (then the session cookie is Secure)")
    tls_key: str | None = Field(None, description="its PEM private key")

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give tls_cert and tls_key together (or neither)")
        for f in (self.tls_cert, self.tls_key):
            if f is not None and not os.access(f, os.R_OK):
                raise ValueError(f"cannot read {f}")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @field_validator("token")
    @classmethod
    def _not_a_placeholder(cls, v: str) -> str:
        if weak_secret(v):
            raise ValueError(
                "is a placeholder or guessable; use a long random string "
                "(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        return v


def weak_secret(value: str) -> bool:
    """A placeholder copied from an example, or too little variety to resist guessing."""
    folded = "".join(ch for ch in value.lower() if ch.isalnum())
    placeholders = ("changeme", "password", "secret", "mytoken", "token", "example", "default", "admin")
    return (
        any(folded.startswith(p) for p in placeholders)
        or len(set(value)) < 6
        or folded in {"1234567890123456", "abcdefghijklmnop"}
    )


class SnoozeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert_id: str = Field(min_length=1, max_length=200)
    by: str = Field(min_length=1, max_length=200)
    duration: Duration
    why: str = Field("", max_length=1000)


class ExpireRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expire: str = Field(min_length=1, max_length=64)
    by: str = Field(min_length=1, max_length=200)


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "(message)"
    return f"{where}: {e['msg']}"


def _refused_over_mqtt(spec: SilenceSpec, now: datetime) -> str | None:
    """MQTT is the least authenticated way in: a silence from it never holds critical alerts and
    lasts at most MQTT_SILENCE_MAX (one sent on an open broker held everything for ten years)."""
    if spec.include_critical:
        return "a silence over MQTT cannot include critical alerts; use the config file or the HTTP API"
    starts = spec.starts_at or now
    ends = spec.ends_at or (starts + spec.duration if spec.duration is not None else None)
    if ends is not None and ends - max(starts, now) > MQTT_SILENCE_MAX:
        return f"a silence over MQTT lasts at most {MQTT_SILENCE_MAX}; use the HTTP API for longer ones"
    return None


async def handle_control(dispatcher: Dispatcher, kind: str, payload: bytes) -> str | None:
    """Apply one control message; return why it was refused, or None if it was applied."""
    try:
        if kind == "snooze":
            req = SnoozeRequest.model_validate_json(payload)
            alert = await dispatcher.snooze(req.alert_id, req.by, req.duration, req.why)
            return None if alert is not None else f"snooze ignored: alert {req.alert_id} unknown or not firing"
        if kind == "silence":
            if b'"expire"' in payload:
                ex = ExpireRequest.model_validate_json(payload)
                sil = await dispatcher.expire_silence(ex.expire, ex.by)
                return None if sil is not None else f"no silence {ex.expire}"
            spec = SilenceSpec.model_validate_json(payload)
            if (why := _refused_over_mqtt(spec, dispatcher.clock())) is not None:
                return why
            await dispatcher.add_silence(spec, source="mqtt")
            return None
    except ValidationError as exc:
        return _first_error(exc)
    except ValueError as exc:
        return str(exc)
    return f"unknown control topic {kind!r}"
