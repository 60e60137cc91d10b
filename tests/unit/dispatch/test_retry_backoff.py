"""Backoff never overflows after days of failures and is jittered (issue 16, defect 2)."""

from __future__ import annotations

import random
from datetime import timedelta

from dispatch.channels import Backoff
from gateway.ble.connection import ErrorClass, RetryPolicy
from stream.retry_backoff import capped_exponential, jittered


def test_channel_backoff_after_thousands_of_failures_is_the_cap_not_an_overflow() -> None:
    b = Backoff(jitter=0.0)
    # a webhook down ~3.5 days with a 5-min cap fails about 1,025 times: 2 ** 1024 used to overflow
    for attempts in (1025, 1100, 10**6):
        assert b.delay(attempts) == timedelta(minutes=5)
    assert [b.delay(n).total_seconds() for n in (1, 2, 3)] == [2.0, 4.0, 8.0]


def test_ble_backoff_after_thousands_of_failures_is_the_cap_not_an_overflow() -> None:
    p = RetryPolicy(jitter=0.0)
    assert p.backoff(ErrorClass.TRANSIENT, 2000) == p.max_s
    assert p.backoff(ErrorClass.TRANSIENT, 10**7) == p.max_s


def test_jitter_spreads_waits_and_never_lengthens_them() -> None:
    b = Backoff()  # default jitter
    waits = {b.delay(3).total_seconds() for _ in range(200)}
    assert len(waits) > 50  # clinics do not retry in step
    assert max(waits) <= 8.0 and min(waits) >= 8.0 * (1 - b.jitter)
    rng = random.Random(7)
    shortened = [jittered(30.0, 0.2, rng) for _ in range(1000)]
    assert 24.0 <= min(shortened) < 25.0 and 29.0 < max(shortened) <= 30.0


def test_capped_exponential_edges() -> None:
    assert capped_exponential(0, 0.5, 30.0) == 0.5
    assert capped_exponential(7, 0.5, 30.0) == 30.0  # 0.5 * 64 capped
    assert capped_exponential(6, 0.5, 30.0) == 16.0
    assert capped_exponential(5, 1.0, 1.0) == 1.0  # no room to grow
    assert capped_exponential(10**9, 3.0, 60.0, factor=1.5) == 60.0
