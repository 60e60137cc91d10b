"""The gateway's YAML config: pydantic models plus errors a field technician can act on.

Every problem in a file is reported at once, one line each, as
`PATH:LINE: dotted.field: what is wrong` (the contract's format). Unknown
keys are errors: a typo must never be silently ignored.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from console.accounts import Role, name_problem, parse_hash
from dispatch.channels import ChannelConfig, check_channel_references
from dispatch.control import HttpConfig
from dispatch.escalation import EscalationSettings
from dispatch.routing import Route, RoutingTree
from dispatch.suppression import InhibitRule, SilenceSpec
from gateway.ble import PROFILE_DEVICE_KINDS
from stream.config_problems import ConfigError, ConfigProblem  # re-exported: box.config is where callers look
from stream.models import Condition, DeviceKind, Duration, parse_duration
from stream.thresholds import Thresholds

# Topic-safe ids: MQTT wildcards and separators must never appear in a topic level.
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# An 18-character resident ID number (GB 11643) must never become a patient id.
_RESIDENT_ID = re.compile(r"^\d{17}[\dXx]$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerAccount(_Strict):
    """A person's or a tool's account on the clinic broker (`vitalgate broker-config`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    role: Literal["staff", "reader"] = Field(
        description="staff: acknowledge/snooze/silence and read alerts; "
        "reader (a county reader, a dashboard): read readings and alerts"
    )


class BrokerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    accounts: list[BrokerAccount] = Field(
        default_factory=list,
        description="who else may use the clinic broker; devices get an account each, named by their id",
    )
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
    def _findable(self) -> BleLink:
        if not self.address and not self.name:
            raise ValueError("give the device's BLE address (AA:BB:CC:DD:EE:FF) or its advertised name")
        return self


class DeviceConfig(_Strict):
    id: str = Field(pattern=_ID)
    kind: DeviceKind
    ble: BleLink | None = None
    expected_interval: Duration | None = Field(
        None,
        description="silence longer than this raises device_offline "
        "(default 30m for ECG patches, none for spot-check devices)",
    )
    schedule: Duration | None = Field(
        None,
        description="expected time between readings (e.g. 24h for a daily "
        "cuff); more than 24 h overdue raises missed_readings",
    )

    @model_validator(mode="after")
    def _ble_profile_fits_kind(self) -> DeviceConfig:
        if self.ble is not None and self.kind not in PROFILE_DEVICE_KINDS[self.ble.profile]:
            fits = " or ".join(sorted(k.value for k in PROFILE_DEVICE_KINDS[self.ble.profile]))
            raise ValueError(
                f"BLE profile {self.ble.profile!r} does not fit a {self.kind.value} device (use kind: {fits})"
            )
        return self


class BleSettings(_Strict):
    """The gateway's own Bluetooth adapter, for devices with `ble:` (docs/ble.md)."""

    adapter: str | None = Field(None, pattern=r"^hci[0-9]{1,2}$", description="default: the first powered adapter")
    max_connections: int = Field(5, ge=1, le=20, description="simultaneous BLE links; most controllers manage 5-7")


class PatientConfig(_Strict):
    id: str = Field(pattern=_ID)
    devices: list[DeviceConfig] = Field(default_factory=list)
    labels: dict[str, str | bool | int] = Field(default_factory=dict)
    # Only the fields written here change; validated merged with the clinic's thresholds
    # (see `GatewayConfig.thresholds_for`), so an override is judged against what it overrides.
    thresholds: dict[str, Any] | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _pseudonymous(cls, v: object) -> object:
        # An unquoted 18-digit number arrives as an int: refuse it for what it is.
        text = str(v) if isinstance(v, int) and not isinstance(v, bool) else v
        if isinstance(text, str) and _RESIDENT_ID.match(text):
            raise ValueError("looks like a resident ID number; use a pseudonymous id such as p-0001")
        return v


class UplinkConfig(BrokerConfig):
    host: str
    cert_file: str | None = Field(
        None,
        description="this clinic's client certificate (PEM) when the county broker "
        "asks for one (mutual TLS); needs tls: true and key_file",
    )
    key_file: str | None = Field(None, description="the private key of cert_file (PEM, readable by the gateway only)")
    max_outbox: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="telemetry kept while the county is unreachable; when full the oldest is dropped, never alerts",
    )
    nats: list[str] | None = Field(
        None,
        min_length=1,
        description="the county's NATS JetStream servers (nats://host:port, the preferred first): when set the "
        "uplink publishes natively, acknowledged by the replicated stream (docs/county.md), instead "
        "of over MQTT to host:port",
    )

    @model_validator(mode="after")
    def _client_certificate(self) -> UplinkConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file (a client certificate and its key), or neither")
        if self.cert_file is not None and not self.tls:
            raise ValueError("a client certificate needs tls: true")
        return self

    @field_validator("nats")
    @classmethod
    def _nats_urls(cls, v: list[str] | None) -> list[str] | None:
        for url in v or []:
            if not url.startswith(("nats://", "tls://")):
                raise ValueError(f"{url!r} is not a NATS server URL (nats://host:port)")
        return v


class InfluxConfig(_Strict):
    """An InfluxDB 2.x write API (or VictoriaMetrics): accepted readings as time series (outbound/influx_sink.py)."""

    url: str
    token: str = ""
    org: str = "vitalgate"
    bucket: str = "vitalgate"
    batch_size: int = Field(5000, ge=1, le=100_000)
    flush_interval: Duration = parse_duration("1s")
    max_outbox: int = Field(1_000_000, ge=1000, le=100_000_000, description="lines kept while the TSDB is unreachable")


class StatusConfig(_Strict):
    interval: Duration = parse_duration("10s")


class ShardsConfig(_Strict):
    """`shards:`: how the box spreads its work and says it is past capacity (shards/, docs/capacity.md)."""

    ecg_lag_warn: Duration = Field(
        parse_duration("10s"),
        description="the ECG analysis this far behind the "
        "frames it acknowledged: ecg_analysis_lagging in the status, and a warning",
    )
    workers: int | Literal["auto"] = Field(
        "auto",
        description="ECG analysis processes, each a shard of the "
        "patients; auto: one per core; 0: in the gateway process",
    )

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: Any) -> Any:
        if isinstance(v, int) and not 0 <= v <= 64:
            raise ValueError("must be auto or 0 to 64")
        return v

    @field_validator("ecg_lag_warn")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if v.total_seconds() <= 0:
            raise ValueError("must be more than 0s")
        return v


class StreamConfig(_Strict):
    queue_size: int = Field(1000, ge=10, le=1_000_000, description="per-patient queue; when full, ingress waits")


class ConsoleAccount(_Strict):
    """A person's account on the doctor's console (console/accounts.py); `vitalgate passwd NAME` makes the line."""

    name: str = Field(description="what the audit trail says: acknowledged by <name>")
    role: Role = Field(description="doctor: see and act; reader: see; technician: devices and metrics")
    password_hash: str = Field(description="scrypt hash from `vitalgate passwd`; never the password itself")

    @model_validator(mode="before")
    @classmethod
    def _no_clear_password(cls, v: Any) -> Any:
        if isinstance(v, dict) and "password" in v:
            raise ValueError(
                "a console account never holds its password; give password_hash, made by `vitalgate passwd NAME`"
            )
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        problem = name_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, v: str) -> str:
        parse_hash(v)  # ValueError says what is wrong
        return v.strip()


class HttpSettings(HttpConfig):
    """`http:`: the API (dispatch/http_api.py, `token`) and the doctor's console, with people's accounts."""

    accounts: list[ConsoleAccount] = Field(
        default_factory=list,
        description="who may sign in to the console; empty: the shared token "
        "is the console password and the name is typed (the old way)",
    )


class GatewayConfig(_Strict):
    clinic: str = Field(pattern=_ID)
    broker: BrokerConfig = BrokerConfig()
    storage: StorageConfig = StorageConfig()
    patients: list[PatientConfig] = Field(default_factory=list)
    escalation: EscalationSettings = EscalationSettings()
    uplink: UplinkConfig | None = None
    influxdb: InfluxConfig | None = None
    thresholds: Thresholds = Thresholds()
    routes: dict[Condition, Route] = Field(default_factory=dict, description="override the default tier table")
    # Dispatcher (dispatch/): routing tree, holds, channels, HTTP API; see config/example.yaml.
    routing: RoutingTree = RoutingTree()
    inhibit_rules: list[InhibitRule] | None = Field(None, description="omit for the defaults; [] for none")
    silences: list[SilenceSpec] = Field(default_factory=list)
    channels: list[ChannelConfig] = Field(default_factory=list)
    http: HttpSettings | None = None
    status: StatusConfig = StatusConfig()
    stream: StreamConfig = StreamConfig()
    ble: BleSettings = BleSettings()
    shards: ShardsConfig = ShardsConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> GatewayConfig:
        problems = cross_check(self.model_dump(mode="python"), self.thresholds)
        if problems:
            loc, msg = problems[0]
            raise ValueError(f"{'.'.join(map(str, loc))}: {msg}")
        return self

    def thresholds_for(self, patient: PatientConfig) -> Thresholds:
        return self.thresholds.with_override(patient.thresholds)


def cross_check(data: dict[str, Any], clinic_thresholds: Thresholds | None) -> list[tuple[tuple, str]]:
    """Checks that span fields: unique ids, per-patient thresholds merged with the clinic's.

    Returns (location, message) pairs so the loader can point at the right line.
    """
    out: list[tuple[tuple, str]] = check_channel_references(data) if isinstance(data, dict) else []
    out += _duplicate_accounts(data)
    patients = data.get("patients") if isinstance(data, dict) else None
    if not isinstance(patients, list):
        return out
    first_p: dict[str, int] = {}
    first_d: dict[str, tuple[int, int]] = {}
    base = clinic_thresholds or Thresholds()
    for i, p in enumerate(patients):
        if not isinstance(p, dict):
            continue
        pid = str(p.get("id"))
        if pid in first_p:
            out.append((("patients", i, "id"), f"patient id {pid!r} already used by patients.{first_p[pid]}"))
        first_p.setdefault(pid, i)
        for j, d in enumerate(p.get("devices") or []):
            if not isinstance(d, dict):
                continue
            did = str(d.get("id"))
            if did in first_d:
                a, b = first_d[did]
                out.append(
                    (
                        ("patients", i, "devices", j, "id"),
                        f"device id {did!r} is already bound to patients.{a} (devices.{b}); a device has one patient",
                    )
                )
            first_d.setdefault(did, (i, j))
        override = p.get("thresholds")
        if isinstance(override, dict):
            try:
                base.with_override(override)
            except ValidationError as exc:
                for err in exc.errors():
                    out.append((("patients", i, "thresholds", *err["loc"]), _clean_message(err)))
            except ValueError as exc:
                out.append((("patients", i, "thresholds"), str(exc)))
    return out


def _duplicate_accounts(data: Any) -> list[tuple[tuple, str]]:
    http = data.get("http") if isinstance(data, dict) else None
    accounts = http.get("accounts") if isinstance(http, dict) else None
    out: list[tuple[tuple, str]] = []
    first: dict[str, int] = {}
    for i, a in enumerate(accounts if isinstance(accounts, list) else []):
        if isinstance(a, dict) and isinstance(a.get("name"), str):
            key = a["name"].strip().casefold()  # names sign in case-insensitively
            if key in first:
                out.append(
                    (
                        ("http", "accounts", i, "name"),
                        f"account {a['name']!r} already given as http.accounts.{first[key]}",
                    )
                )
            first.setdefault(key, i)
    return out


# ---------------------------------------------------------------- loading


def _node_at(root: yaml.Node | None, loc: tuple[Any, ...], key_line: bool = False) -> tuple[yaml.Node | None, bool]:
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
                    # An unknown key is reported at the key itself; anything else at its value.
                    nxt = k if key_line and part == loc[-1] and v is not None else v
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


def _clean_message(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (check the spelling; see config/example.yaml)"
    elif err.get("type") == "missing":
        msg = "required but missing"
    elif err.get("type") == "string_pattern_mismatch":
        msg = "use letters, digits, '-', '_' or '.' only (it becomes part of MQTT topics)"
    elif err.get("type") in ("enum", "literal_error"):
        msg = msg.replace("Input should be", "must be")
    return msg


SECRET_KEYS = ("password", "token")


def resolve_secrets(data: Any, loc: tuple = ()) -> list[tuple[tuple, str]]:
    """Replace ``password_file: PATH`` / ``password_env: NAME`` (and ``token_...``) by the secret they
    point at, in place, anywhere in the config: secrets can live in systemd credentials or the
    environment instead of the YAML.  Returns (location, problem) pairs."""
    problems: list[tuple[tuple, str]] = []
    if isinstance(data, list):
        for i, item in enumerate(data):
            problems += resolve_secrets(item, (*loc, i))
        return problems
    if not isinstance(data, dict):
        return problems
    for key in SECRET_KEYS:
        for how in ("file", "env"):
            ref = f"{key}_{how}"
            if ref not in data:
                continue
            where = (*loc, ref)
            if key in data:
                problems.append((where, f"give {key} or {ref}, not both"))
                continue
            source = data.pop(ref)
            if not isinstance(source, str) or not source:
                problems.append((where, "expected a file path" if how == "file" else "expected a variable name"))
            elif how == "file":
                try:
                    data[key] = Path(source).read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    problems.append((where, f"cannot read {source}: {getattr(exc, 'strerror', None) or exc}"))
            elif source in os.environ:
                data[key] = os.environ[source]
            else:
                problems.append((where, f"environment variable {source} is not set"))
    for k, v in data.items():
        problems += resolve_secrets(v, (*loc, k))
    return problems


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
        raise ConfigError(
            [ConfigProblem(path, 1, "(root)", "the file must be a mapping of keys (clinic:, broker:, ...)")]
        )

    def located(loc: tuple, message: str, key_line: bool = False) -> ConfigProblem:
        node, _ = _node_at(root, loc, key_line=key_line)
        line = node.start_mark.line + 1 if node is not None else 1
        return ConfigProblem(path, line, ".".join(str(p) for p in loc) or "(root)", message)

    problems += [located(loc, msg) for loc, msg in resolve_secrets(data)]
    # Checks across fields run on the raw data, so they are reported even when fields fail too.
    try:
        clinic_th = Thresholds.model_validate(data.get("thresholds") or {})
    except ValidationError:
        clinic_th = None
    cross = cross_check(data, clinic_th)
    problems += [located(loc, msg) for loc, msg in cross]
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            if not loc and cross:
                continue  # the model's own cross check; already reported with its line above
            problems.append(located(loc, _clean_message(err), key_line=err.get("type") == "extra_forbidden"))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
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


def load_or_report(path: str | Path, stream: TextIO | None = None) -> GatewayConfig | None:
    """The config, or None after printing every problem in it (one per line) for the technician.

    Problems go to stderr unless `stream` says otherwise (`check-config` prints them on stdout)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        out = stream if stream is not None else sys.stderr
        for p in exc.problems:
            print(p, file=out)
        return None
