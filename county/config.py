"""The county centre's YAML config (`vitalgate county`, `vitalgate county-engine`).

Fixed keys (docs/spec/public-surface.md#county): `county`, `engine.nats`, `engine.mqtt`, `partitions`,
`storage.path`, `http.{bind,port,token}`. Everything else here is the project's design and has a
default, so a file with only the fixed keys runs. Unknown keys are errors, and every problem is
reported at once as `PATH:LINE: dotted.field: what is wrong`, like the gateway's config.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stream.config_problems import (  # one `PATH:LINE: field: message` report for both services
    ConfigError,
    ConfigProblem,
)

# Ids become NATS subject tokens and MQTT topic levels: no wildcards, separators or spaces.
_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
ROUTE_PORT_OFFSET = 2000  # default cluster route port: the client port + this (4222 -> 6222, NATS' own habit)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _host_port(text: str, default_scheme: str = "") -> tuple[str, int]:
    u = urlsplit(text if "://" in text else f"{default_scheme or 'x'}://{text}")
    if not u.hostname or u.port is None:
        raise ValueError(f"{text!r}: write it as host:port")
    return u.hostname, u.port


class EngineConfig(_Strict):
    nats: list[str] = Field(min_length=1, description="the JetStream cluster's client URLs, one per server")
    mqtt: list[str] = Field(
        default_factory=list, description="the same servers' MQTT listeners (host:port), same order"
    )
    cluster: list[str] | None = Field(
        None,
        description="route listeners (host:port), same order; default: each server's client port + 2000 on its host",
    )
    replicas: int = Field(3, ge=1, le=5, description="stream replicas (the contract's x3)")

    @field_validator("nats")
    @classmethod
    def _nats_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("nats://", "tls://")):
                raise ValueError(f"{url!r}: a NATS client URL starts with nats:// (or tls://)")
            _host_port(url)
        return v

    @field_validator("mqtt", "cluster")
    @classmethod
    def _addresses(cls, v: list[str] | None) -> list[str] | None:
        for a in v or []:
            _host_port(a)
        return v

    @model_validator(mode="after")
    def _same_servers(self) -> EngineConfig:
        n = len(self.nats)
        if self.mqtt and len(self.mqtt) != n:
            raise ValueError(f"engine.mqtt lists {len(self.mqtt)} listeners for {n} servers in engine.nats")
        if self.cluster is not None and len(self.cluster) != n:
            raise ValueError(f"engine.cluster lists {len(self.cluster)} routes for {n} servers in engine.nats")
        if self.replicas > n:
            raise ValueError(f"engine.replicas {self.replicas} is more than the {n} servers in engine.nats")
        return self

    def client(self, k: int) -> tuple[str, int]:
        return _host_port(self.nats[k])

    def route(self, k: int) -> tuple[str, int]:
        if self.cluster is not None:
            return _host_port(self.cluster[k])
        host, port = self.client(k)
        return host, port + ROUTE_PORT_OFFSET

    def mqtt_listener(self, k: int) -> tuple[str, int] | None:
        return _host_port(self.mqtt[k]) if self.mqtt else None

    def mqtt_listeners(self) -> list[tuple[str, int]]:
        return [_host_port(a) for a in self.mqtt]


class StorageSettings(_Strict):
    path: Path = Path("./county-var")


class HttpSettings(_Strict):
    bind: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535, description="0 serves no HTTP")
    token: str = Field(min_length=1)


class ConsumeSettings(_Strict):
    """How the county processes share and read the partitions (county/partitions.py)."""

    lease_ttl_s: float = Field(
        4.0,
        ge=1.0,
        le=300.0,
        description="a partition whose owner stops renewing "
        "is free after this long (also how long a dead process's partitions wait)",
    )
    ack_wait_s: float = Field(
        6.0,
        ge=1.0,
        le=600.0,
        description="a fetched but unacknowledged message is "
        "redelivered after this long (a killed process's in-flight batch)",
    )
    batch: int = Field(500, ge=1, le=10_000, description="messages fetched and stored per transaction")


class CountyConfig(_Strict):
    county: str = Field(pattern=_ID)
    engine: EngineConfig
    partitions: int = Field(8, ge=1, le=1024)
    storage: StorageSettings = StorageSettings()
    http: HttpSettings | None = None
    consume: ConsumeSettings = ConsumeSettings()
    offline_after_s: float = Field(
        60.0,
        ge=5.0,
        le=86_400.0,
        description="a clinic whose last status is older "
        "than this shows offline even without a last will (a native NATS uplink has none)",
    )
    retention_days: int = Field(
        14,
        ge=1,
        le=3650,
        description="how long the cluster keeps uplinked messages (the county's SQLite keeps them for good)",
    )


# ---------------------------------------------------------------- loading


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
            if found is None:
                break
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return node.start_mark.line + 1 if node is not None else 1


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    kind = err.get("type")
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see docs/county.md)"
    if kind == "missing":
        return "required but missing"
    if kind == "string_pattern_mismatch":
        return "use letters, digits, '-' or '_' only (it becomes part of NATS subjects)"
    return msg


def _resolve_token(data: dict, problems: list[tuple[tuple, str]]) -> None:
    """`http.token_file` / `http.token_env`: the API token from a file or the environment (as the gateway)."""
    http = data.get("http")
    if not isinstance(http, dict):
        return
    for how in ("file", "env"):
        ref = f"token_{how}"
        if ref not in http:
            continue
        source = http.pop(ref)
        if "token" in http:
            problems.append((("http", ref), f"give token or {ref}, not both"))
        elif how == "file":
            try:
                http["token"] = Path(str(source)).read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append((("http", ref), f"cannot read {source}: {exc.strerror}"))
        elif str(source) in os.environ:
            http["token"] = os.environ[str(source)]
        else:
            problems.append((("http", ref), f"environment variable {source} is not set"))


def load_config_text(text: str, path: str = "<config>") -> CountyConfig:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            [
                ConfigProblem(
                    path,
                    mark.line + 1 if mark else 1,
                    "(yaml)",
                    f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                )
            ]
        ) from None
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(path, 1, "(root)", "the file must be a mapping (county:, engine:, ...)")])
    raw: list[tuple[tuple, str]] = []
    _resolve_token(data, raw)
    problems = [ConfigProblem(path, _line_of(root, loc), ".".join(map(str, loc)), m) for loc, m in raw]
    try:
        cfg = CountyConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            problems.append(
                ConfigProblem(path, _line_of(root, loc), ".".join(map(str, loc)) or "(root)", _message(err))
            )
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
    return cfg


def load_config(path: str | Path) -> CountyConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [ConfigProblem(str(p), 0, "(file)", f"cannot read: {getattr(exc, 'strerror', None) or exc}")]
        ) from None
    return load_config_text(text, str(p))


def load_or_report(path: str | Path, stream: TextIO | None = None) -> CountyConfig | None:
    """The config, or None after printing every problem (stderr unless told otherwise)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=stream or sys.stderr)
        return None


def subject_token(text: str) -> str:
    """A clinic or patient id as a NATS subject token (ids are already restricted; '.' would split)."""
    return re.sub(r"[.*> ]", "_", text)
