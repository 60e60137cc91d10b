"""Login throttling: wrong passwords lock out their source, and too many from anywhere slow everyone.

A per-request delay alone let ~37 guesses/s through when sent in parallel.  Now
each source address may fail ``PER_SOURCE_FAILURES`` times in ``WINDOW_S``;
after that it is refused (429) until the window passes, whatever it sends.
Past ``GLOBAL_FAILURES`` failures in the window from all sources together
(a distributed guess), every login is refused until they age out.  And each
account may be guessed at ``PER_ACCOUNT_FAILURES`` times in the window from
anywhere; then that account is refused (429) until the window passes, so
guessing one doctor's password from many addresses stops too.  (The price: a
stranger can keep one account locked; the doctor still has MQTT, a colleague's
account or the API token, and the log names the sources.)  Pure bookkeeping,
clock injected; memory bounded by ``MAX_SOURCES``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW_S = 600.0
PER_SOURCE_FAILURES = 10
PER_ACCOUNT_FAILURES = 10
GLOBAL_FAILURES = 100
MAX_SOURCES = 4096


class LoginGuard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_source: OrderedDict[str, deque[float]] = OrderedDict()
        self._by_account: OrderedDict[str, deque[float]] = OrderedDict()
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
        _count(self._by_source, source, now, PER_SOURCE_FAILURES)
        self._all.append(now)
        if len(self._all) > GLOBAL_FAILURES:
            self._all.popleft()

    def account_retry_after(self, account: str) -> float | None:
        """Seconds until ``account`` may be tried again (from anywhere), or None."""
        now = self.clock()
        q = self._by_account.get(_folded(account))
        if q is None:
            return None
        self._trim(q, now)
        if len(q) >= PER_ACCOUNT_FAILURES:
            return q[0] + WINDOW_S - now
        return None

    def account_failed(self, account: str) -> None:
        _count(self._by_account, _folded(account), self.clock(), PER_ACCOUNT_FAILURES)

    def withdraw(self, source: str) -> None:
        """An attempt counted in advance that was refused unchecked (its account is locked) is not a guess."""
        q = self._by_source.get(source)
        if q:
            q.pop()
            if self._all:
                self._all.pop()

    def succeeded(self, source: str, account: str | None = None) -> None:
        """A right password: the attempt counted in advance (see the console's login) is withdrawn,
        and the source's and the account's earlier failures are forgiven."""
        if self._by_source.pop(source, None) is not None and self._all:
            self._all.pop()
        if account is not None:
            self._by_account.pop(_folded(account), None)


def _folded(account: str) -> str:
    return account.strip().casefold()


def _count(table: OrderedDict[str, deque[float]], key: str, now: float, keep: int) -> None:
    q = table.pop(key, None) or deque(maxlen=keep)
    q.append(now)
    table[key] = q
    while len(table) > MAX_SOURCES:
        table.popitem(last=False)
