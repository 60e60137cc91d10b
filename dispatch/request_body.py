"""Request bodies read with a size cap and parsed without a way to crash the handler.

Unauthenticated routes (the console's login) used to read bodies of any size
(10 x 10 MB raised RSS by 110 MB), and a 100k-deep JSON array overflowed the
parser's recursion into a 500.  Both now get a 4xx with a reason.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

LOGIN_MAX_BYTES = 4 * 1024  # a login form: name, password, next
API_MAX_BYTES = 64 * 1024  # an ack, a snooze, a silence


class BodyTooLarge(Exception):
    """The body is over the route's cap (answer 413)."""


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as it passes ``limit`` bytes (never buffered past it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes is over the {limit}-byte limit")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body is over the {limit}-byte limit")
        parts.append(chunk)
    return b"".join(parts)


def json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``; ValueError with a reason for anything else (deep nesting included)."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("body is not JSON") from None
    except RecursionError:
        raise ValueError("body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body
