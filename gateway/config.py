"""The gateway's YAML config: pydantic models plus errors a field technician can act on.

Every problem in a file is reported at once, one line each, as
`PATH:LINE: dotted.field: what is wrong` (the contract's format). Unknown
keys are errors: a typo must never be silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dispatch.escalation import EscalationSettings
from dispatch.routing import Route
from stream.models import Condition, DeviceKind, Duration, parse_duration
from stream.thresholds import Thresholds

# Topic-safe ids: MQTT wildcards and separators must never appear in a topic level.
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# An 18-character resident ID number (GB 11643) must never become a patient id.
_RESIDENT_ID = re.compile(r"^\d{17}[\dXx]$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    keepalive: int = Field(30, ge=5, le=3600)


class StorageConfig(_Strict):
    path: Path = Path("./var")


class BleLink(_Strict):
    address: str | None = Field(None, pattern=r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$")
    name: str | None = None
    profile: str

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        allowed = {"blood_pressure", "glucose", "heart_rate", "polar_h10_ecg", "vendor_ecg"}
        if v not in allowed:
            raise ValueError(f"unknown BLE profile {v!r}; use one of {', '.join(sorted(allowed))}")
        return v

    @model_validator(mode="after")
    def _findable(self) -> "BleLink":
        if not self.address and not self.name:
            raise ValueError("give the device's BLE address (AA:BB:CC:DD:EE:FF) or its advertised name")
        return self


class DeviceConfig(_Strict):
    id: str = Field(pattern=_ID)
    kind: DeviceKind
    ble: BleLink | None = None
    expected_interval: Duration | None = Field(None, description="silence longer than this raises device_offline "
                                               "(default 30m for ECG patches, none for spot-check devices)")
    schedule: Duration | None = Field(None, description="expected time between readings (e.g. 24h for a daily "
                                      "cuff); more than 24 h overdue raises missed_readings")


class PatientConfig(_Strict):
    id: str = Field(pattern=_ID)
    devices: list[DeviceConfig] = Field(default_factory=list)
    labels: dict[str, str | bool | int] = Field(default_factory=dict)
    thresholds: Thresholds | None = None

    @field_validator("id")
    @classmethod
    def _pseudonymous(cls, v: str) -> str:
        if _RESIDENT_ID.match(v):
            raise ValueError("looks like a resident ID number; use a pseudonymous id such as p-0001")
        return v


class UplinkConfig(BrokerConfig):
    host: str  # type: ignore[assignment]


class StatusConfig(_Strict):
    interval: Duration = parse_duration("10s")


class StreamConfig(_Strict):
    queue_size: int = Field(1000, ge=10, le=1_000_000, description="per-patient queue; when full, ingress waits")


class GatewayConfig(_Strict):
    clinic: str = Field(pattern=_ID)
    broker: BrokerConfig = BrokerConfig()
    storage: StorageConfig = StorageConfig()
    patients: list[PatientConfig] = Field(default_factory=list)
    escalation: EscalationSettings = EscalationSettings()
    uplink: UplinkConfig | None = None
    thresholds: Thresholds = Thresholds()
    routes: dict[Condition, Route] = Field(default_factory=dict, description="override the default tier table")
    status: StatusConfig = StatusConfig()
    stream: StreamConfig = StreamConfig()

    @model_validator(mode="after")
    def _unique_ids(self) -> "GatewayConfig":
        seen_p: set[str] = set()
        seen_d: set[str] = set()
        for p in self.patients:
            if p.id in seen_p:
                raise ValueError(f"patient id {p.id!r} appears twice")
            seen_p.add(p.id)
            for d in p.devices:
                if d.id in seen_d:
                    raise ValueError(f"device id {d.id!r} is bound to more than one patient")
                seen_d.add(d.id)
        return self


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[yaml.Node | None, bool]:
    """Walk the composed YAML tree along a pydantic error location.

    Returns the deepest node found and whether the whole path exists (a
    missing field points at its parent mapping).
    """
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    # For an unknown key point at the key itself; otherwise at its value.
                    nxt = v
                    break
            if nxt is None:
                return node, False
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node, False
    return node, True


def _duplicate_keys(node: yaml.Node | None, trail: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = str(k.value)
            if key in seen:
                out.append((".".join((*trail, key)), k.start_mark.line + 1))
            seen.add(key)
            out.extend(_duplicate_keys(v, (*trail, key)))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.extend(_duplicate_keys(v, (*trail, str(i))))
    return out


def _clean_message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (check the spelling; see config/example.yaml)"
    elif err.get("type") == "missing":
        msg = "required but missing"
    elif err.get("type") == "string_pattern_mismatch":
        msg = "use letters, digits, '-', '_' or '.' only (it becomes part of MQTT topics)"
    elif err.get("type") == "enum":
        msg = msg.replace("Input should be", "must be")
    return msg


def load_config_text(text: str, path: str = "<config>") -> GatewayConfig:
    """Parse and validate; raise ConfigError listing every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(path, line, "(yaml)", f"not valid YAML: {problem}")]) from None
    problems = [
        ConfigProblem(path, line, field, "key appears twice; the later value would silently win")
        for field, line in _duplicate_keys(root)
    ]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(path, 1, "(root)", "the file must be a mapping of keys (clinic:, broker:, ...)")])
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            node, _ = _node_at(root, loc)
            line = node.start_mark.line + 1 if node is not None else 1
            field = ".".join(str(p) for p in loc) or "(root)"
            problems.append(ConfigProblem(path, line, field, _clean_message(err)))
        raise ConfigError(sorted(problems, key=lambda p: p.line)) from None
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path) -> GatewayConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(p), 0, "(file)", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(str(p), 0, "(file)", "not UTF-8 text; save it as UTF-8")]) from None
    return load_config_text(text, str(p))
