"""Capped exponential backoff with jitter, shared by every retry loop of the box.

The exponent is capped where the delay reaches its ceiling anyway, so a peer
down for days (a webhook failing 1,000+ times) never overflows a float, and the
wait is jittered so that a county broker restart does not bring every clinic
back in the same second.  Jitter only shortens a wait: a retry never comes
later than configured.
"""

from __future__ import annotations

import math
import random

DEFAULT_JITTER = 0.2  # share of a wait that is randomly taken off it


def capped_exponential(attempt: int, initial_s: float, max_s: float, factor: float = 2.0) -> float:
    """Wait after the ``attempt``-th consecutive failure (1-based): initial * factor**(attempt - 1), at most max_s."""
    if initial_s <= 0.0 or max_s <= initial_s or factor <= 1.0:
        return max(0.0, min(initial_s, max_s))
    # beyond this exponent the delay is max_s: stop there instead of computing factor**1024
    ceiling = math.ceil(math.log(max_s / initial_s, factor))
    n = min(max(0, attempt - 1), ceiling)
    return min(max_s, initial_s * factor**n)


def jittered(delay_s: float, share: float = DEFAULT_JITTER, rng: random.Random | None = None) -> float:
    """``delay_s`` shortened by a random share in [0, share)."""
    if share <= 0.0:
        return delay_s
    return delay_s * (1.0 - share * (rng or random).random())
