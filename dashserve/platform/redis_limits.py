"""Rate limits shared by every server process through Redis; each check is one atomic Lua script.

Per subject (hash-tagged so a cluster keeps them on one slot)::

    {p}:{subject}:req   ZSET  reservation id -> admission time (ms)      requests per minute
    {p}:{subject}:tok   ZSET  reservation id -> admission time (ms)      tokens per minute
    {p}:{subject}:toks  HASH  reservation id -> tokens counted
    {p}:{subject}:sum   STR   sum of ``toks`` inside the window
    {p}:{subject}:run   ZSET  reservation id -> lease end (ms)           concurrency

Times come from Redis (``TIME``), so processes on different clocks agree. A concurrency slot is
a lease of ``lease_s`` (30 s) that its process renews every third of that while the request
runs: a crashed process, or a release lost while Redis was down or restarting, frees the slot
within one lease. If Redis cannot be reached the limiter logs an error and limits per process
until it can. Each admission returns the key's counts, which ``expects`` reads (headroom.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from dashserve.platform.headroom import Headroom
from dashserve.platform.limits import (
    WINDOW_S,
    InProcessLimiter,
    LimitPolicy,
    Reservation,
    counted_tokens,
    refusal,
)

logger = logging.getLogger(__name__)

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local cutoff = now - window
local function expire_tokens()
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  for i = 1, #old do
    local n = tonumber(redis.call('HGET', KEYS[3], old[i]) or '0')
    redis.call('HDEL', KEYS[3], old[i])
    redis.call('DECRBY', KEYS[4], n)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
end
local function keep(ttl)
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
"""

# ARGV: window_ms, rpm, tpm, concurrency (0 = none), tokens, id, lease_ms
# -> {kind, wait_ms} refused; {'ok', 0, running, requests, tokens} admitted (counts with it)
_ACQUIRE = _PRELUDE + """
local rpm, tpm, conc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens, id, lease = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local running, requests, used = 0, 0, 0
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  running = redis.call('ZCARD', KEYS[5])
  if running >= conc then return {'concurrency', 1000} end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  requests = redis.call('ZCARD', KEYS[1])
  if requests >= rpm then
    local e = redis.call('ZRANGE', KEYS[1], requests - rpm, requests - rpm, 'WITHSCORES')
    return {'rpm', tonumber(e[2]) + window - now}
  end
end
if tpm > 0 then
  expire_tokens()
  used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used + tokens > tpm then
    local need = used + tokens - tpm
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      need = need - tonumber(redis.call('HGET', KEYS[3], entries[i]) or '0')
      if need <= 0 then return {'tpm', tonumber(entries[i + 1]) + window - now} end
    end
    return {'tpm', window}
  end
end
if conc > 0 then redis.call('ZADD', KEYS[5], now + lease, id) end
if rpm > 0 then redis.call('ZADD', KEYS[1], now, id) end
if tpm > 0 then
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('HSET', KEYS[3], id, tokens)
  redis.call('INCRBY', KEYS[4], tokens)
end
keep(window + lease)
return {'ok', 0, running + 1, requests + 1, used + tokens}
"""

# ARGV: window_ms, id, actual tokens, tpm (0 = none), lease_ms
_SETTLE = _PRELUDE + """
local id, actual, tpm, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREM', KEYS[5], id)
if tpm > 0 then
  expire_tokens()
  local cur = redis.call('HGET', KEYS[3], id)
  if cur then
    redis.call('HSET', KEYS[3], id, actual)
    redis.call('INCRBY', KEYS[4], actual - tonumber(cur))
  elseif actual > 0 then
    redis.call('ZADD', KEYS[2], now, id)
    redis.call('HSET', KEYS[3], id, actual)
    redis.call('INCRBY', KEYS[4], actual)
  end
end
keep(window + lease)
return 'ok'
"""


# ARGV: lease_ms, ids...: extend the leases still held (an expired one is not brought back)
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i]) end
return 'ok'
"""


class RedisLimiter:
    """The ``Limiter`` contract enforced across processes sharing one Redis."""

    def __init__(
        self, redis: Redis, *, prefix: str = "dashserve:limits", window_s: float = WINDOW_S,
        lease_s: float = 30.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._window_ms = int(window_s * 1000)
        self._lease_ms = int(lease_s * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._settle = redis.register_script(_SETTLE)
        self._renew = redis.register_script(_RENEW)
        self._fallback = InProcessLimiter(window_s=window_s)
        self._held: dict[str, str] = {}  # reservation id -> subject, for leases to renew
        self._renewer: asyncio.Task[None] | None = None
        self._room = Headroom()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisLimiter:
        client = Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, **kwargs)

    def _keys(self, subject: str) -> list[str]:
        base = f"{self._prefix}:{{{subject}}}"
        return [f"{base}:req", f"{base}:tok", f"{base}:toks", f"{base}:sum", f"{base}:run"]

    async def acquire(self, subject: str, policy: LimitPolicy, tokens: int) -> Reservation:
        counted = counted_tokens(policy, tokens)
        if policy.is_unlimited:
            return Reservation(subject, uuid.uuid4().hex, counted, policy, is_local=False)
        rid = uuid.uuid4().hex
        args: list[int | str] = [
            self._window_ms, policy.rpm or 0, policy.tpm or 0, policy.max_concurrency or 0,
            counted, rid, self._lease_ms,
        ]
        self._room.asking(subject, 1)
        try:
            answer = await self._acquire(keys=self._keys(subject), args=args)
        except RedisError as exc:
            self._room.forget(subject)
            logger.error("redis rate limiter unreachable, limiting per process: %s", exc)
            return self._fallback.acquire_now(subject, policy, tokens)
        finally:
            self._room.asking(subject, -1)
        kind = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
        if kind != "ok":
            self._room.forget(subject)
            raise refusal(kind, int(answer[1]) / 1000.0)
        self._room.admitted(subject, *(int(n) for n in answer[2:5]))
        if policy.max_concurrency:
            self._held[rid] = subject
            if self._renewer is None or self._renewer.done():
                self._renewer = asyncio.create_task(self._renew_leases(), name="lease-renewal")
        return Reservation(subject, rid, counted, policy, is_local=False)

    def expects(self, subject: str, policy: LimitPolicy, tokens: int) -> bool:
        """True when ``acquire`` will almost surely admit: the key's last admission here, a
        moment ago, left ample room (a run may then start while its admission is asked)."""
        return not policy.is_unlimited and self._room.ample(
            subject, policy, counted_tokens(policy, tokens))

    async def _renew_leases(self) -> None:
        """Extend the leases of the slots this process holds, every third of a lease."""
        while self._held:
            await asyncio.sleep(self._lease_ms / 3000.0)
            by_subject: dict[str, list[str]] = {}
            for rid, subject in list(self._held.items()):
                by_subject.setdefault(subject, []).append(rid)
            for subject, ids in by_subject.items():
                try:
                    await self._renew(keys=[self._keys(subject)[4]], args=[self._lease_ms, *ids])
                except RedisError as exc:
                    logger.error("redis rate limiter could not renew leases: %s", exc)

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        if self._held.pop(reservation.reservation_id, None) is not None:  # not renewed now
            self._room.released(reservation.subject)
        if reservation.is_local:
            self._fallback.settle_now(reservation, actual_tokens)
            return
        if reservation.policy.is_unlimited:
            return
        args: list[int | str] = [
            self._window_ms, reservation.reservation_id, max(0, actual_tokens),
            reservation.policy.tpm or 0, self._lease_ms,
        ]
        try:
            await self._settle(keys=self._keys(reservation.subject), args=args)
        except RedisError as exc:
            # The lease (no longer renewed) frees the slot within lease_s; the token
            # estimate stays counted meanwhile.
            logger.error("redis rate limiter could not settle %s: %s", reservation.subject, exc)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        await self._redis.aclose()
