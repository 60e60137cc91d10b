"""Sharing the partitions among however many county processes run.

Each process is a *member*: it writes ``m.{member}`` into the lease bucket every tick. A partition
is read by the member holding its lease ``p.{K}``. Leases and member records expire
``lease_ttl_s`` after their last write (the bucket's time-to-live), so a process that dies --
SIGKILL, power cut, lost network -- simply stops renewing and its partitions become free.

Every tick (a third of the TTL) a member:

1. renews its leases (a lease renewed by revision fails if it expired and someone else took it);
2. works out its fair share, ceil(partitions / live members);
3. gives back leases beyond its share (the highest partitions first), after its reader for that
   partition has finished the batch in hand;
4. claims free partitions up to its share.

A lease is only about load and order. Correctness does not depend on it: a partition read by two
members at once for a moment (a paused process that has not noticed its lease expired) gets each
message delivered to one of them, and a message delivered twice is stored once (county/store.py).
When the lease bucket cannot be reached (a server died and its group is electing a leader), a member
keeps reading what it holds; once the bucket answers again, a lease that expired meanwhile is claimed
back if nobody else took it, else given up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable

from county.engine import EngineUnavailable, PartitionLeases

log = logging.getLogger("vitalgate.county.partitions")


class PartitionSharing:
    def __init__(
        self,
        leases: PartitionLeases,
        partitions: int,
        member: str,
        lease_ttl_s: float,
        on_gain: Callable[[int], Awaitable[None]],
        on_lose: Callable[[int], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.leases = leases
        self.partitions = partitions
        self.member = member
        self.ttl = lease_ttl_s
        self.on_gain = on_gain
        self.on_lose = on_lose
        self.clock = clock
        self.owned: set[int] = set()
        self.members: list[str] = [member]
        self._last_renewed = clock()
        self._handing_back: dict[int, asyncio.Task] = {}
        self.handovers = 0  # partitions gained after the first tick: what this member took over

    @property
    def tick_s(self) -> float:
        return self.ttl / 3

    async def run(self, stop: asyncio.Event) -> None:
        first = True
        while not stop.is_set():
            gained = await self.tick()
            if not first:
                self.handovers += gained
            first = False
            try:
                await asyncio.wait_for(stop.wait(), self.tick_s)
            except TimeoutError:
                pass

    async def tick(self) -> int:
        """One round of renew / rebalance / claim; returns how many partitions were gained."""
        gained = 0
        try:
            await self.leases.heartbeat(self.member)
            for k in sorted(self.owned):
                if await self.leases.renew(k, self.member) or await self.leases.claim(k, self.member):
                    continue  # renewed, or it had expired unclaimed and is ours again: keep reading
                log.warning("lost the lease of partition %d (it expired and another process took it)", k)
                await self._lose(k, release=False)
            self._last_renewed = self.clock()
            members, owners = await self.leases.snapshot()
            if self.member not in members:
                members.append(self.member)
            self.members = sorted(members)
            share = math.ceil(self.partitions / len(self.members))
            for k in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - share)]:
                await self._lose(k, release=True)
            for k in range(self.partitions):
                if len(self.owned) >= share:
                    break
                if k in self.owned or k in owners or k in self._handing_back:
                    continue
                if await self.leases.claim(k, self.member):
                    self.owned.add(k)
                    gained += 1
                    await self.on_gain(k)
        except EngineUnavailable as exc:
            # Keep reading what we hold: the others cannot reach the bucket either, or if they can and
            # take a partition over, both read it for a moment and the store keeps one copy.
            log.warning(
                "lease bucket unreachable (%.1fs since the last renewal): %s", self.clock() - self._last_renewed, exc
            )
        return gained

    async def _lose(self, k: int, release: bool) -> None:
        """Stop reading k and give its lease back, in the background: the tick goes on renewing the others."""
        self.owned.discard(k)
        task = asyncio.create_task(self._hand_back(k, release), name=f"hand-back-p{k}")
        self._handing_back[k] = task
        task.add_done_callback(functools.partial(self._handed_back, k))

    def _handed_back(self, k: int, _task: asyncio.Task[None]) -> None:
        self._handing_back.pop(k, None)

    async def _hand_back(self, k: int, release: bool) -> None:
        await self.on_lose(k)  # the reader finishes its batch in hand first, so nothing is read after release
        if release:
            try:
                await self.leases.release(k, self.member)
            except EngineUnavailable:
                pass  # it expires by itself

    async def release_all(self) -> None:
        """A clean stop: give everything back at once so the others need not wait for the TTL."""
        for k in sorted(self.owned):
            await self._lose(k, release=True)
        await asyncio.gather(*list(self._handing_back.values()), return_exceptions=True)
        try:
            await self.leases.leave(self.member)  # so the others' fair share counts one member less at once
        except EngineUnavailable:
            pass  # the member record expires by itself
