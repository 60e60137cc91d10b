"""People's console accounts: the roles, what each may do, and their password hashes.

Each doctor, technician and county reader has an account in the config
(``http.accounts: [{name, role, password_hash}]``); ``vitalgate passwd NAME``
makes the hash. The audit trail of an acknowledge, snooze or referral names
the account that signed in, not a name someone typed.

Roles (what the console lets each do):

- ``doctor``: every page, and acknowledge, snooze, mark referred;
- ``reader`` (a county reader, a supervisor): every page, no action;
- ``technician``: the devices page and ``/metrics`` (battery, last seen, links) — no
  patient's clinical data. The console has no configuration actions today; a
  technician's configuration work happens in the config file and the commands.

Hashes are scrypt (``hashlib.scrypt``, RFC 7914) with a 16-byte random salt per
account, written as ``$scrypt$ln=15,r=8,p=3$<salt>$<hash>`` (base64 without
padding; the layout passlib uses). The default cost is one of OWASP's scrypt
settings (N=2^15, r=8, p=3: 32 MiB and ~0.3 s per check on a PC); hashes
below that strength or needing more than 256 MiB are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from dispatch.control import weak_secret

Role = Literal["doctor", "technician", "reader"]
ROLES: tuple[str, ...] = ("doctor", "technician", "reader")

# What a role may do. "clinical": the pages with patients' data (alerts, patients, screening, reports,
# FHIR, the live stream); "devices": the devices page and /metrics; "act": acknowledge, snooze, refer.
PERMISSIONS: dict[str, frozenset[str]] = {
    "doctor": frozenset({"clinical", "devices", "act"}),
    "reader": frozenset({"clinical", "devices"}),
    "technician": frozenset({"devices"}),
}
# Where a role lands after signing in when it may not see the alerts page.
HOME = {"technician": "/devices"}

LOG2_N, BLOCK_R, PARALLEL_P = 15, 8, 3  # the default cost (OWASP: N=2^15, r=8, p=3)
SALT_BYTES, HASH_BYTES = 16, 32
MIN_WORK = 2**16  # N * p at least this (OWASP's settings are 2^17..2^16.3)
MAX_MEMORY = 256 * 1024 * 1024  # 128 * r * N: a check must not exhaust the box
MIN_PASSWORD = 10

NAME = re.compile(r"^[^\W_][\w.-]{0,39}$")  # letters (any script), digits, '.', '_', '-'; 1-40
_HASH = re.compile(r"^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


@dataclass(frozen=True)
class ScryptHash:
    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __str__(self) -> str:
        return f"$scrypt$ln={self.log2_n},r={self.r},p={self.p}${_b64(self.salt)}${_b64(self.digest)}"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


def parse_hash(text: str) -> ScryptHash:
    """The hash's parts; ValueError saying what is wrong with a malformed or too weak one."""
    m = _HASH.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError("not a password hash made by `vitalgate passwd` ($scrypt$ln=..,r=..,p=..$salt$hash)")
    ln, r, p = (int(g) for g in m.groups()[:3])
    try:
        salt, digest = _unb64(m.group(4)), _unb64(m.group(5))
    except ValueError:
        raise ValueError("the salt or hash is not valid base64") from None
    if len(salt) < SALT_BYTES or len(digest) < HASH_BYTES:
        raise ValueError(f"salt or hash too short (at least {SALT_BYTES} and {HASH_BYTES} bytes)")
    if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("cost parameters out of range (ln 1-20, r 1-32, p 1-16)")
    if ln < 14 or r < 8 or (2**ln) * p < MIN_WORK:
        raise ValueError("cost too low (at least ln=14, r=8 and N*p >= 2^16); make it again with `vitalgate passwd`")
    if 128 * r * 2**ln > MAX_MEMORY:
        raise ValueError("cost too high: a check would need more than 256 MiB")
    return ScryptHash(ln, r, p, salt, digest)


def _scrypt(password: str, h: ScryptHash) -> bytes:
    n = 2**h.log2_n
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=h.salt,
        n=n,
        r=h.r,
        p=h.p,
        maxmem=128 * h.r * n + 16 * 1024 * 1024,
        dklen=len(h.digest),
    )


def hash_password(password: str, log2_n: int = LOG2_N, r: int = BLOCK_R, p: int = PARALLEL_P) -> str:
    h = ScryptHash(log2_n, r, p, secrets.token_bytes(SALT_BYTES), b"\0" * HASH_BYTES)
    return str(ScryptHash(log2_n, r, p, h.salt, _scrypt(password, h)))


def verify(password: str, password_hash: str | ScryptHash) -> bool:
    """Constant-time check of a password against its hash (CPU- and memory-bound: call it off the event loop)."""
    h = parse_hash(password_hash) if isinstance(password_hash, str) else password_hash
    return hmac.compare_digest(_scrypt(password, h), h.digest)


def decoy_hash() -> ScryptHash:
    """A hash nobody's password matches, checked for an unknown name so its answer takes as long as a known one's."""
    return ScryptHash(LOG2_N, BLOCK_R, PARALLEL_P, secrets.token_bytes(SALT_BYTES), secrets.token_bytes(HASH_BYTES))


def name_problem(name: str) -> str | None:
    if not NAME.match(name):
        return "use 1-40 letters or digits, '.', '_' or '-' (no spaces), starting with a letter or digit"
    return None


def password_problem(password: str) -> str | None:
    """Why a new password is too weak to accept, or None."""
    if len(password) < MIN_PASSWORD:
        return f"too short: at least {MIN_PASSWORD} characters"
    if weak_secret(password):
        return "a placeholder or too easy to guess; use a passphrase of several words or a random string"
    return None


def config_line(name: str, role: str, password_hash: str) -> str:
    """The line to paste under ``http.accounts:`` in the gateway config."""
    return f'    - {{name: {name}, role: {role}, password_hash: "{password_hash}"}}'
