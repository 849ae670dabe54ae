"""Concurrency slots in Redis are leases renewed while their holder runs: a Redis restart
that loses the releases frees them within a lease, and a long request keeps its slot."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashserve.errors import Throttled
from dashserve.platform.limits import LimitPolicy
from dashserve.platform.redis_limits import RedisLimiter
from tests.reliability.services import RedisServer

LEASE_S = 0.6
POLICY = LimitPolicy(max_concurrency=2)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop(save=False)


async def test_a_running_request_keeps_its_slot_past_the_lease(redis_server: RedisServer
                                                                ) -> None:
    limiter = RedisLimiter.from_url(redis_server.url, lease_s=LEASE_S)
    try:
        held = [await limiter.acquire("k", POLICY, 10) for _ in range(2)]
        await asyncio.sleep(LEASE_S * 4)  # far past one lease: renewed meanwhile
        with pytest.raises(Throttled):
            await limiter.acquire("k", POLICY, 10)
        await limiter.settle(held[0], 5)
        await limiter.settle(held[1], 5)
        await limiter.acquire("k", POLICY, 10)
    finally:
        await limiter.close()


async def test_slots_lost_in_a_redis_restart_come_back_within_a_lease(
        redis_server: RedisServer) -> None:
    limiter = RedisLimiter.from_url(redis_server.url, lease_s=LEASE_S)
    try:
        held = [await limiter.acquire("k", POLICY, 10) for _ in range(2)]
        redis_server.stop(save=True)  # the slots are saved with the data
        for reservation in held:  # the requests end while Redis is down
            await limiter.settle(reservation, 5)
        redis_server.start()
        with pytest.raises(Throttled):  # still taken right after the restart
            await limiter.acquire("k", POLICY, 10)
        await asyncio.sleep(LEASE_S * 2)
        for _ in range(2):
            await limiter.acquire("k", POLICY, 10)
    finally:
        await limiter.close()
