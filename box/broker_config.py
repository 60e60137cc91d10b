"""`vitalgate broker-config`: a clinic Mosquitto that admits only the box's own parties.

From the gateway config it writes, into one directory:

* ``mosquitto.conf``: the listener of ``broker:``, ``allow_anonymous false``,
  persistence under ``data/``, ``max_queued_messages 0`` (never drop a QoS 1
  message for a slow subscriber), the password and ACL files below;
* ``passwd``: one account per party, passwords hashed as Mosquitto 2 does
  (PBKDF2-SHA512, ``$7$``), never in clear;
* ``acl``: least access per role —
  the gateway reads and writes the clinic's topics; a device (account = its id)
  may only publish under ``vg/{clinic}/device/{its id}/``; staff may publish
  ``ack``, ``snooze`` and ``silence`` and read alerts and status; a reader (a
  county reader, a dashboard) may read ``patient/``, ``alert/`` and status;
* ``credentials.txt`` (mode 0600): the generated passwords, one ``name:password``
  a line, for the technician to hand out.  A re-run keeps the passwords already
  there (nothing is rotated by accident); the gateway's own password comes from
  ``broker.password`` when the config has one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
from dataclasses import dataclass
from pathlib import Path

from box.config import GatewayConfig

GATEWAY_ACCOUNT = "gateway"
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes
SALT_BYTES = 12


@dataclass(frozen=True)
class Account:
    name: str
    role: str  # gateway | staff | reader | device


def accounts_of(cfg: GatewayConfig) -> list[Account]:
    out = [Account(cfg.broker.username or GATEWAY_ACCOUNT, "gateway")]
    out += [Account(a.name, a.role) for a in cfg.broker.accounts]
    out += [Account(d.id, "device") for p in cfg.patients for d in p.devices]
    names = [a.name for a in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"broker account names must be unique (a device id is an account): {', '.join(dupes)}")
    return out


def hash_password(password: str, salt: bytes | None = None) -> str:
    """Mosquitto 2's password-file hash: $7$iterations$base64(salt)$base64(PBKDF2-SHA512)."""
    salt = salt or secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def acl_text(clinic: str, accounts: list[Account]) -> str:
    root = f"vg/{clinic}"
    rules = {
        "gateway": [f"topic readwrite {root}/#"],
        "staff": [
            f"topic write {root}/ack",
            f"topic write {root}/snooze",
            f"topic write {root}/silence",
            f"topic read {root}/alert/#",
            f"topic read {root}/status",
        ],
        "reader": [f"topic read {root}/patient/#", f"topic read {root}/alert/#", f"topic read {root}/status"],
    }
    lines = [f"# written by vitalgate broker-config for clinic {clinic}: least access per account", ""]
    for a in accounts:
        lines.append(f"user {a.name}")
        lines += rules.get(a.role, [f"topic write {root}/device/{a.name}/#"])
        lines.append("")
    return "\n".join(lines)


def mosquitto_conf(cfg: GatewayConfig, out: Path, user: str) -> str:
    return "\n".join(
        [
            "# written by vitalgate broker-config: only the box's own parties are admitted",
            f"user {user}",
            "per_listener_settings false",
            f"listener {cfg.broker.port} {cfg.broker.host}",
            "allow_anonymous false",
            f"password_file {out / 'passwd'}",
            f"acl_file {out / 'acl'}",
            "persistence true",
            f"persistence_location {out / 'data'}/",
            "autosave_interval 60",
            "# never drop a QoS 1 message for a slow subscriber (bounded by memory)",
            "max_queued_messages 0",
            "log_type error",
            "log_type warning",
            "",
        ]
    )


def _read_credentials(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        name, sep, pw = line.partition(":")
        if sep and name and not name.startswith("#"):
            out[name] = pw
    return out


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def write(cfg: GatewayConfig, out: Path, user: str = "mosquitto") -> tuple[list[Account], list[str], Path]:
    """Write the broker's files; returns (accounts, names whose password was generated now, credentials file)."""
    accounts = accounts_of(cfg)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    (out / "data").mkdir(exist_ok=True)
    cred_path = out / "credentials.txt"
    known = _read_credentials(cred_path)
    if cfg.broker.password:
        known[accounts[0].name] = cfg.broker.password
    generated = []
    for a in accounts:
        if a.name not in known:
            known[a.name] = secrets.token_urlsafe(18)
            generated.append(a.name)
    _write_private(
        cred_path,
        "# broker accounts of clinic "
        + cfg.clinic
        + " (name:password); keep this file private\n"
        + "".join(f"{a.name}:{known[a.name]}\n" for a in accounts),
    )
    _write_private(out / "passwd", "".join(f"{a.name}:{hash_password(known[a.name])}\n" for a in accounts))
    _write_private(out / "acl", acl_text(cfg.clinic, accounts))
    (out / "mosquitto.conf").write_text(mosquitto_conf(cfg, out, user))
    if os.geteuid() == 0 and user != "root":
        # Mosquitto started as root drops to `user` before it reads these: let that user read them
        try:
            ent = pwd.getpwnam(user)
        except KeyError:
            pass
        else:
            for p in (out, out / "data", out / "passwd", out / "acl", out / "mosquitto.conf"):
                os.chown(p, ent.pw_uid, ent.pw_gid)
    return accounts, generated, cred_path
