"""Who may read the page: a clinic login (the config's `http.token` as the password) held in a signed cookie.

The cookie carries the doctor's name (for the audit trail: "acknowledged by")
and an expiry, signed with HMAC-SHA256 under a key derived from the token, so
changing the token in the config logs everyone out. It is HttpOnly and
SameSite=Strict; state-changing requests made with it must also carry the
`X-Vitalgate: 1` header, which a cross-site form cannot send (CSRF).
Scripts and Prometheus may use `Authorization: Bearer <token>` instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from starlette.requests import Request

COOKIE = "vg_session"
LANG_COOKIE = "vg_lang"
SESSION_TTL_S = 12 * 3600  # one working day; then sign in again
CSRF_HEADER = "x-vitalgate"
MAX_NAME = 40


def _key(token: str) -> bytes:
    return hashlib.sha256(b"vitalgate-console-session|" + token.encode()).digest()


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def make_session(token: str, name: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    body = _b64(json.dumps({"n": name[:MAX_NAME], "exp": int(now + SESSION_TTL_S)}, ensure_ascii=False).encode())
    sig = _b64(hmac.new(_key(token), body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}"


def read_session(token: str, value: str | None, now: float | None = None) -> str | None:
    """The signed-in name, or None for a missing, forged or expired cookie."""
    if not value or "." not in value:
        return None
    if not value.isascii():
        return None      # ours are base64url: anything else is forged (compare_digest raised on it: a 500)
    body, sig = value.rsplit(".", 1)
    want = _b64(hmac.new(_key(token), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(sig, want):
        return None
    try:
        data = json.loads(_unb64(body))
    except ValueError:
        return None
    if int(data.get("exp", 0)) < (time.time() if now is None else now):
        return None
    return str(data.get("n") or "doctor")


def password_ok(token: str, given: str) -> bool:
    return hmac.compare_digest(given.strip().encode(), token.encode())


def bearer_ok(request: Request, token: str) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def identity(request: Request, token: str) -> tuple[str, str] | None:
    """(name, how) for a signed-in doctor ("cookie") or a script with the token ("bearer"); else None."""
    if bearer_ok(request, token):
        return "api-token", "bearer"
    name = read_session(token, request.cookies.get(COOKIE))
    return (name, "cookie") if name else None


def safe_next(target: str | None) -> str:
    """Only same-site paths after login: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
