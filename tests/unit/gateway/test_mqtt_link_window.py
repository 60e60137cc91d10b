"""The MQTT link's in-flight window (gateway/mqtt_link.py `PublishWindow`): a bounded number of
slots, waiters served first come first served, a released slot handed to the oldest live waiter,
cancelled waiters skipped, never a slot lost or made up."""

from __future__ import annotations

import asyncio
import random

from gateway.mqtt_link import PublishWindow


def test_slots_are_bounded_and_waiters_served_in_order():
    async def main() -> list[int]:
        w = PublishWindow(2)
        order: list[int] = []

        async def user(i: int) -> None:
            await w.acquire()
            order.append(i)

        await w.acquire()
        await w.acquire()
        assert w.free == 0 and not w.try_acquire()
        tasks = [asyncio.create_task(user(i)) for i in range(5)]
        await asyncio.sleep(0)
        assert order == []  # all wait
        for _ in range(5):
            w.release()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert w.free == 0  # every released slot went to a waiter, none was made up
        w.release()
        w.release()
        assert w.free == 2
        return order

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


def test_a_cancelled_waiter_is_skipped_and_a_slot_handed_to_it_is_passed_on():
    async def main() -> None:
        w = PublishWindow(1)
        assert w.try_acquire()
        got: list[str] = []

        async def user(name: str) -> None:
            await w.acquire()
            got.append(name)

        a, b, c = (asyncio.create_task(user(n)) for n in "abc")
        await asyncio.sleep(0)
        a.cancel()  # cancelled while waiting: release must skip it
        await asyncio.sleep(0)
        w.release()  # -> b
        c.cancel()
        await asyncio.sleep(0)
        assert got == ["b"]
        w.release()  # c was cancelled: the slot is free again
        assert w.free == 1
        # A slot handed over to a task cancelled before it ran is passed on, not lost.
        assert w.try_acquire()
        d = asyncio.create_task(user("d"))
        e = asyncio.create_task(user("e"))
        await asyncio.sleep(0)
        w.release()  # -> d's future gets the slot ...
        d.cancel()  # ... but d is cancelled before it resumes
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert got == ["b", "e"]
        for t in (a, b, c, d, e):
            try:
                await t
            except asyncio.CancelledError:
                pass

    asyncio.run(main())


def test_random_use_never_exceeds_the_bound_nor_loses_a_slot():
    async def main(seed: int) -> None:
        rng = random.Random(seed)
        size = rng.randint(1, 5)
        w = PublishWindow(size)
        held = 0
        peak = 0

        async def user() -> None:
            nonlocal held, peak
            await w.acquire()
            held += 1
            peak = max(peak, held)
            await asyncio.sleep(rng.random() / 1000)
            held -= 1
            w.release()

        tasks = [asyncio.create_task(user()) for _ in range(60)]
        for t in rng.sample(tasks, 15):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert peak <= size and held == 0
        assert w.free == size

    for seed in range(20):
        asyncio.run(main(seed))
