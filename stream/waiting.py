"""Waiting on whichever comes first: a stop request, some other event, or a timeout.

The drain loops (county uplink, time-series sink) sleep this way so that a
shutdown or new work wakes them at once instead of after their poll interval.
"""

from __future__ import annotations

import asyncio


async def wait_any(stop: asyncio.Event, other: asyncio.Event | None = None, timeout: float | None = None) -> None:
    """Return when `stop` or `other` is set, or after `timeout` seconds (None: no limit)."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if other is not None:
        waiters.append(asyncio.ensure_future(other.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
