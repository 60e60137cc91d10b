"""Login throttling: wrong passwords lock out their source, and too many from anywhere slow everyone.

A per-request delay alone let ~37 guesses/s through when sent in parallel.  Now
each source address may fail ``PER_SOURCE_FAILURES`` times in ``WINDOW_S``;
after that it is refused (429) until the window passes, whatever it sends.
Past ``GLOBAL_FAILURES`` failures in the window from all sources together
(a distributed guess), every login is refused until they age out.  Pure
bookkeeping, clock injected; memory bounded by ``MAX_SOURCES``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW_S = 600.0
PER_SOURCE_FAILURES = 10
GLOBAL_FAILURES = 100
MAX_SOURCES = 4096


class LoginGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_source: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()

    def _trim(self, q: deque[float], now: float) -> None:
        while q and q[0] <= now - WINDOW_S:
            q.popleft()

    def retry_after(self, source: str) -> float | None:
        """Seconds until ``source`` may try again, or None if it may try now."""
        now = self.clock()
        self._trim(self._all, now)
        if len(self._all) >= GLOBAL_FAILURES:
            return self._all[0] + WINDOW_S - now
        q = self._by_source.get(source)
        if q is None:
            return None
        self._trim(q, now)
        if len(q) >= PER_SOURCE_FAILURES:
            return q[0] + WINDOW_S - now
        return None

    def failed(self, source: str) -> None:
        now = self.clock()
        q = self._by_source.pop(source, None) or deque(maxlen=PER_SOURCE_FAILURES)
        q.append(now)
        self._by_source[source] = q
        while len(self._by_source) > MAX_SOURCES:
            self._by_source.popitem(last=False)
        self._all.append(now)
        if len(self._all) > GLOBAL_FAILURES:
            self._all.popleft()

    def succeeded(self, source: str) -> None:
        """A right password: the attempt counted in advance (see the console's login) is withdrawn,
        and the source's earlier failures are forgiven."""
        if self._by_source.pop(source, None) is not None and self._all:
            self._all.pop()
