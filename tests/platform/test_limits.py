"""platform.limits: exact sliding windows, retry-after, settlement, concurrency, engine capacity."""

from __future__ import annotations

import asyncio

import pytest

from dashserve.contracts.outputs import EngineStats
from dashserve.errors import ConcurrencyThrottled, ServerBusy, Throttled
from dashserve.platform.limits import (
    InProcessLimiter,
    LimitPolicy,
    check_engine_capacity,
    retry_after_header,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_rpm_is_exact_and_slides() -> None:
    clock = Clock()
    limiter = InProcessLimiter(clock=clock)
    policy = LimitPolicy(rpm=3)
    for offset in (0.0, 10.0, 20.0):
        clock.now = 1000.0 + offset
        await limiter.acquire("k", policy, 0)
    with pytest.raises(Throttled) as info:
        await limiter.acquire("k", policy, 0)
    assert info.value.code == "Throttling.RateQuota"
    assert info.value.retry_after_s == pytest.approx(40.0)  # the first leaves at t=1060
    clock.now = 1060.0
    await limiter.acquire("k", policy, 0)  # the window slid past the first request
    with pytest.raises(Throttled) as info:
        await limiter.acquire("k", policy, 0)
    assert info.value.retry_after_s == pytest.approx(10.0)
    await limiter.acquire("other", policy, 0)  # limits are per subject


async def test_tpm_counts_estimates_then_actual_tokens() -> None:
    clock = Clock()
    limiter = InProcessLimiter(clock=clock)
    policy = LimitPolicy(tpm=100)
    first = await limiter.acquire("k", policy, 60)
    with pytest.raises(Throttled) as info:
        await limiter.acquire("k", policy, 60)
    assert "Token" in info.value.message and info.value.retry_after_s == pytest.approx(60.0)
    await limiter.settle(first, 30)  # it really used 30
    clock.now += 5
    second = await limiter.acquire("k", policy, 60)
    await limiter.settle(second, 70)  # and this one 70: the window now holds 100
    with pytest.raises(Throttled) as info:
        await limiter.acquire("k", policy, 1)
    assert info.value.retry_after_s == pytest.approx(55.0)  # when the first 30 expire
    clock.now += 55
    await limiter.acquire("k", policy, 30)


async def test_a_request_larger_than_the_budget_runs_alone() -> None:
    limiter = InProcessLimiter(clock=Clock())
    policy = LimitPolicy(tpm=100)
    big = await limiter.acquire("k", policy, 5000)
    assert big.tokens == 100
    with pytest.raises(Throttled):
        await limiter.acquire("k", policy, 1)


async def test_concurrency_slots_are_released_on_settle() -> None:
    limiter = InProcessLimiter(clock=Clock())
    policy = LimitPolicy(max_concurrency=2)
    a = await limiter.acquire("k", policy, 0)
    await limiter.acquire("k", policy, 0)
    with pytest.raises(ConcurrencyThrottled) as info:
        await limiter.acquire("k", policy, 0)
    assert "concurrent" in info.value.message and 0 < info.value.retry_after_s
    await limiter.settle(a, 0)
    await limiter.acquire("k", policy, 0)
    assert limiter.in_flight("k") == 2


async def test_refused_requests_do_not_count() -> None:
    clock = Clock()
    limiter = InProcessLimiter(clock=clock)
    policy = LimitPolicy(rpm=2, tpm=1000, max_concurrency=1)
    r = await limiter.acquire("k", policy, 10)
    for _ in range(5):
        with pytest.raises(ConcurrencyThrottled):
            await limiter.acquire("k", policy, 10)
    await limiter.settle(r, 10)
    r = await limiter.acquire("k", policy, 10)  # the refusals used no rpm
    await limiter.settle(r, 10)
    with pytest.raises(Throttled):
        await limiter.acquire("k", policy, 10)


async def test_burst_of_200_admits_exactly_the_limit() -> None:
    limiter = InProcessLimiter()
    policy = LimitPolicy(rpm=37)

    async def one() -> bool:
        try:
            await limiter.acquire("k", policy, 1)
        except Throttled:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(200)))
    assert sum(results) == 37


def test_engine_capacity() -> None:
    check_engine_capacity(None, max_waiting=1)
    calm = EngineStats(num_waiting=0, num_running=4, num_kv_blocks_total=10, num_kv_blocks_free=0)
    check_engine_capacity(calm, max_waiting=8)  # full cache but nobody waiting: fine
    busy = EngineStats(num_waiting=8, num_running=4, num_kv_blocks_total=10, num_kv_blocks_free=5)
    with pytest.raises(ServerBusy, match="waiting"):
        check_engine_capacity(busy, max_waiting=8)
    full = EngineStats(num_waiting=1, num_running=4, num_kv_blocks_total=10, num_kv_blocks_free=0)
    with pytest.raises(ServerBusy, match="KV cache"):
        check_engine_capacity(full, max_waiting=None)


def test_retry_after_header_rounds_up() -> None:
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(2.2) == "3"
    assert retry_after_header(40.0) == "40"
