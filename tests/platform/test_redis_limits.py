"""platform.redis_limits: the same limits held exactly across processes through a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from dashserve.errors import ConcurrencyThrottled, Throttled
from dashserve.platform.limits import LimitPolicy
from dashserve.platform.redis_limits import RedisLimiter


@pytest.fixture
async def limiters(redis_url: str) -> AsyncIterator[tuple[RedisLimiter, RedisLimiter]]:
    """Two limiters with their own connections: two server processes sharing one Redis."""
    prefix = "dstest:" + uuid.uuid4().hex[:10]
    a = RedisLimiter.from_url(redis_url, prefix=prefix)
    b = RedisLimiter.from_url(redis_url, prefix=prefix)
    yield a, b
    keys = [k async for k in a._redis.scan_iter(match=prefix + "*")]
    if keys:
        await a._redis.delete(*keys)
    await a.close()
    await b.close()


async def test_burst_across_two_processes_admits_exactly_rpm(limiters) -> None:  # noqa: ANN001
    a, b = limiters
    policy = LimitPolicy(rpm=50)

    async def one(limiter: RedisLimiter) -> bool:
        try:
            await limiter.acquire("key1", policy, 1)
        except Throttled as exc:
            assert 0 < exc.retry_after_s <= 60
            return False
        return True

    results = await asyncio.gather(*(one(a if i % 2 else b) for i in range(200)))
    assert sum(results) == 50


async def test_tpm_settles_with_actual_tokens(limiters) -> None:  # noqa: ANN001
    a, b = limiters
    policy = LimitPolicy(tpm=100)
    first = await a.acquire("key1", policy, 80)
    with pytest.raises(Throttled) as info:
        await b.acquire("key1", policy, 30)
    assert "Token" in info.value.message and 59 < info.value.retry_after_s <= 60
    await a.settle(first, 20)  # it used far less than estimated
    await b.acquire("key1", policy, 80)
    with pytest.raises(Throttled):
        await b.acquire("key1", policy, 1)


async def test_concurrency_is_shared_and_released(limiters) -> None:  # noqa: ANN001
    a, b = limiters
    policy = LimitPolicy(max_concurrency=2)
    held = [await a.acquire("key1", policy, 0), await b.acquire("key1", policy, 0)]
    with pytest.raises(ConcurrencyThrottled):
        await a.acquire("key1", policy, 0)
    await b.settle(held[0], 0)  # settled by the other process
    await a.acquire("key1", policy, 0)


async def test_window_slides(redis_url: str) -> None:
    prefix = "dstest:" + uuid.uuid4().hex[:10]
    limiter = RedisLimiter.from_url(redis_url, prefix=prefix, window_s=0.4)
    try:
        policy = LimitPolicy(rpm=2)
        await limiter.acquire("k", policy, 0)
        await limiter.acquire("k", policy, 0)
        with pytest.raises(Throttled) as info:
            await limiter.acquire("k", policy, 0)
        assert 0 < info.value.retry_after_s <= 0.4
        await asyncio.sleep(info.value.retry_after_s + 0.05)
        await limiter.acquire("k", policy, 0)
    finally:
        keys = [k async for k in limiter._redis.scan_iter(match=prefix + "*")]
        if keys:
            await limiter._redis.delete(*keys)
        await limiter.close()


async def test_unreachable_redis_falls_back_to_process_limits() -> None:
    limiter = RedisLimiter.from_url("redis://127.0.0.1:1/0")
    try:
        policy = LimitPolicy(rpm=1, max_concurrency=5)
        held = await limiter.acquire("k", policy, 0)
        assert held.is_local
        with pytest.raises(Throttled):
            await limiter.acquire("k", policy, 0)
        await limiter.settle(held, 0)
    finally:
        await limiter.close()


async def test_expects_only_what_the_last_admission_left_room_for(limiters) -> None:  # noqa: ANN001
    a, b = limiters
    policy = LimitPolicy(rpm=8, tpm=1000, max_concurrency=4)
    assert not a.expects("key1", policy, 10)  # never admitted here
    assert not a.expects("key1", LimitPolicy(), 10)  # unlimited: admitted at once anyway
    first = await a.acquire("key1", policy, 10)
    assert a.expects("key1", policy, 10) and not a.expects("key1", policy, 491)
    assert not b.expects("key1", policy, 10)  # the other process has not admitted it
    await b.acquire("key1", policy, 10)
    await b.acquire("key1", policy, 10)  # the window holds 3 of 8 requests, 3 of 4 slots
    assert not b.expects("key1", policy, 10)
    await b.settle(first, 10)  # a slot released by the other process
    await a.settle(await a.acquire("key1", policy, 10), 10)  # a learns of it: 2 running, 4 requests
    assert not a.expects("key1", policy, 10)  # a fifth request would pass half the rpm


async def test_a_refusal_ends_expecting(limiters) -> None:  # noqa: ANN001
    a, b = limiters
    policy = LimitPolicy(tpm=100)
    await a.acquire("key1", policy, 10)
    assert a.expects("key1", policy, 10)
    await b.acquire("key1", policy, 80)  # another process takes the room
    assert a.expects("key1", policy, 10)  # a does not know yet...
    with pytest.raises(Throttled):
        await a.acquire("key1", policy, 20)  # ...but its limiter still decides exactly
    assert not a.expects("key1", policy, 1)
