"""Who is signed in: sessions kept by the server, a random id in the cookie.

Signing in opens a session: the server keeps (account, role, expiry) under a
random 256-bit id and the cookie carries only that id (HttpOnly,
SameSite=Strict, Secure over HTTPS). Logging out forgets the id on the server,
so a copied cookie is refused from then on; so is one past its 12 hours. The
store is the gateway's memory: a restart signs everyone out, which is also
what a changed account list in the config needs.

State-changing requests made with the cookie must also carry `X-Vitalgate: 1`,
which a cross-site form cannot send (CSRF). Scripts and Prometheus may use
`Authorization: Bearer <token>` (the config's `http.token`) instead; the token
may do what a doctor may, and says who acts in the request's `by`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from console.accounts import PERMISSIONS

COOKIE = "vg_session"
LANG_COOKIE = "vg_lang"
SESSION_TTL_S = 12 * 3600  # one working day; then sign in again
MAX_SESSIONS = 1000  # a clinic has a handful of people; the oldest session goes first past this
CSRF_HEADER = "x-vitalgate"
MAX_NAME = 40
TOKEN_NAME = "api-token"


@dataclass(frozen=True)
class SignedIn:
    """Who a request comes from: an account's session ("cookie") or the clinic's token ("bearer")."""

    name: str
    role: str
    how: str

    def may(self, what: str) -> bool:
        """``what``: "clinical", "devices" or "act" (console.accounts.PERMISSIONS)."""
        return what in PERMISSIONS.get(self.role, frozenset())


@dataclass(frozen=True)
class _Session:
    name: str
    role: str
    expires: float


class SessionStore:
    """Open sessions by the SHA-256 of their id (the id itself is only in the browser's cookie).

    Expiry runs on a monotonic clock: a box without network time whose clock jumps neither
    ends nor lengthens a session."""

    def __init__(
        self,
        ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.ttl_s, self.clock, self.max_sessions = ttl_s, clock, max_sessions
        self._open: OrderedDict[bytes, _Session] = OrderedDict()  # oldest first (one TTL: also soonest to expire)

    @staticmethod
    def _key(sid: str) -> bytes:
        return hashlib.sha256(sid.encode("ascii")).digest()

    def _sweep(self, now: float) -> None:
        while self._open and next(iter(self._open.values())).expires <= now:
            self._open.popitem(last=False)

    def open(self, name: str, role: str) -> str:
        """A new session; returns the id for the cookie."""
        now = self.clock()
        self._sweep(now)
        sid = secrets.token_urlsafe(32)
        self._open[self._key(sid)] = _Session(name[:MAX_NAME], role, now + self.ttl_s)
        while len(self._open) > self.max_sessions:
            self._open.popitem(last=False)
        return sid

    def get(self, sid: str | None) -> SignedIn | None:
        """The session's account, or None for a missing, unknown, forgotten or expired id."""
        if not sid or not sid.isascii() or len(sid) > 100:
            return None  # ours are 43 base64url characters: anything else is forged
        s = self._open.get(self._key(sid))
        if s is None:
            return None
        if s.expires <= self.clock():
            self._open.pop(self._key(sid), None)
            return None
        return SignedIn(s.name, s.role, "cookie")

    def close(self, sid: str | None) -> SignedIn | None:
        """Forget a session (logout); returns whose it was."""
        who = self.get(sid)
        if who is not None:
            self._open.pop(self._key(sid), None)  # type: ignore[arg-type]
        return who

    def __len__(self) -> int:
        return len(self._open)


def password_ok(token: str, given: str) -> bool:
    """The shared clinic password (`http.token`), for a config without accounts."""
    return hmac.compare_digest(given.strip().encode(), token.encode())


def bearer_ok(request: Request, token: str) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def identity(request: Request, token: str, sessions: SessionStore) -> SignedIn | None:
    """A signed-in person (cookie) or a script with the clinic token (bearer, a doctor's rights); else None."""
    if bearer_ok(request, token):
        return SignedIn(TOKEN_NAME, "doctor", "bearer")
    return sessions.get(request.cookies.get(COOKIE))


def safe_next(target: str | None) -> str:
    """Only same-site paths after login: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
