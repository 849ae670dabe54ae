"""Per-key rate limits (requests/min, tokens/min, concurrency) over a sliding window, in process.

Every limiter answers ``acquire`` with a ``Reservation`` or raises a ``Throttled`` error with
``retry_after_s``; ``settle`` replaces the token estimate with the actual count and frees the
concurrency slot. ``RedisLimiter`` (redis_limits.py) gives the same answers across processes.

Window bookkeeping for one subject (a key), oldest first::

    now - window_s                                   now
         |  req  req      req   req        req        |
         |  [t0,n0] [t1,n1] ...           [tk,nk]     |   tokens: sum(n) <= tpm
    entries older than now - window_s are dropped before every check
"""

from __future__ import annotations

import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from dashserve.contracts.outputs import EngineStats
from dashserve.errors import ConcurrencyThrottled, ServerBusy, Throttled

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """Limits for one key; None means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None

    @property
    def is_unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None and self.max_concurrency is None


@dataclass(slots=True)
class Reservation:
    """What ``acquire`` took: returned to ``settle`` exactly once."""

    subject: str  # the limited party, usually the key id
    reservation_id: str  # unique; names this request's entries in the windows
    tokens: int  # tokens counted against the tpm window at admission (an estimate)
    policy: LimitPolicy
    is_local: bool = True  # False when held in Redis (a Redis limiter may fall back to local)


class Limiter(Protocol):
    async def acquire(self, subject: str, policy: LimitPolicy, tokens: int) -> Reservation: ...

    def expects(self, subject: str, policy: LimitPolicy, tokens: int) -> bool:
        """True when ``acquire`` takes a while (a shared store) and will almost surely admit."""
        ...

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None: ...

    async def close(self) -> None: ...


def refusal(kind: str, retry_after_s: float) -> Throttled:
    """The client-visible error for a refused acquire (``kind``: concurrency, rpm or tpm)."""
    retry_after_s = max(0.001, retry_after_s)
    if kind == "concurrency":
        return ConcurrencyThrottled(
            "Too many concurrent requests for this API key.", retry_after_s=retry_after_s
        )
    if kind == "tpm":
        return Throttled(
            "Token rate limit exceeded, please try again later.", retry_after_s=retry_after_s
        )
    return Throttled(retry_after_s=retry_after_s)


def counted_tokens(policy: LimitPolicy, tokens: int) -> int:
    """Tokens an admission counts: a lone request larger than the whole budget may still run."""
    tokens = max(0, tokens)
    return min(tokens, policy.tpm) if policy.tpm is not None else tokens


@dataclass(slots=True)
class _Window:
    requests: deque[tuple[float, str]] = field(default_factory=deque)
    tokens: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)  # id -> [t, n]
    token_sum: float = 0.0
    in_flight: set[str] = field(default_factory=set)

    def trim(self, cutoff: float) -> None:
        while self.requests and self.requests[0][0] <= cutoff:
            self.requests.popleft()
        while self.tokens:
            rid, (at, n) = next(iter(self.tokens.items()))
            if at > cutoff:
                break
            del self.tokens[rid]
            self.token_sum -= n

    def is_idle(self) -> bool:
        return not (self.requests or self.tokens or self.in_flight)


class InProcessLimiter:
    """Exact sliding-window limits within one process (all checks happen without awaiting)."""

    def __init__(
        self, *, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    async def acquire(self, subject: str, policy: LimitPolicy, tokens: int) -> Reservation:
        return self.acquire_now(subject, policy, tokens)

    def expects(self, subject: str, policy: LimitPolicy, tokens: int) -> bool:
        return False  # acquire answers at once: nothing to start early

    def acquire_now(self, subject: str, policy: LimitPolicy, tokens: int) -> Reservation:
        """Synchronous acquire (used directly as the Redis limiter's fallback)."""
        now = self._clock()
        window = self._windows.setdefault(subject, _Window())
        window.trim(now - self._window_s)
        counted = counted_tokens(policy, tokens)
        self._check(window, policy, counted, now)
        rid = uuid.uuid4().hex
        if policy.max_concurrency is not None:
            window.in_flight.add(rid)
        if policy.rpm is not None:
            window.requests.append((now, rid))
        if policy.tpm is not None:
            window.tokens[rid] = [now, counted]
            window.token_sum += counted
        return Reservation(subject, rid, counted, policy)

    def _check(self, window: _Window, policy: LimitPolicy, counted: int, now: float) -> None:
        if policy.max_concurrency is not None and len(window.in_flight) >= policy.max_concurrency:
            raise refusal("concurrency", 1.0)
        if policy.rpm is not None and len(window.requests) >= policy.rpm:
            # The request that must leave the window before one more fits.
            at = window.requests[len(window.requests) - policy.rpm][0]
            raise refusal("rpm", at + self._window_s - now)
        if policy.tpm is not None and window.token_sum + counted > policy.tpm:
            raise refusal("tpm", self._tokens_free_in(window, policy.tpm, counted, now))

    def _tokens_free_in(self, window: _Window, tpm: int, counted: int, now: float) -> float:
        need = window.token_sum + counted - tpm
        for at, n in window.tokens.values():
            need -= n
            if need <= 0:
                return at + self._window_s - now
        return self._window_s

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        self.settle_now(reservation, actual_tokens)

    def settle_now(self, reservation: Reservation, actual_tokens: int) -> None:
        window = self._windows.get(reservation.subject)
        if window is None:
            window = self._windows[reservation.subject] = _Window()
        now = self._clock()
        window.trim(now - self._window_s)
        window.in_flight.discard(reservation.reservation_id)
        if reservation.policy.tpm is not None:
            actual = max(0, actual_tokens)
            entry = window.tokens.get(reservation.reservation_id)
            if entry is not None:  # still in the window: correct the estimate in place
                window.token_sum += actual - entry[1]
                entry[1] = actual
            elif actual:  # its window has passed: the tokens were spent now
                window.tokens[reservation.reservation_id] = [now, actual]
                window.token_sum += actual
        if window.is_idle():
            del self._windows[reservation.subject]

    def in_flight(self, subject: str) -> int:
        window = self._windows.get(subject)
        return len(window.in_flight) if window else 0

    async def close(self) -> None:
        self._windows.clear()


def check_engine_capacity(
    stats: EngineStats | None, *, max_waiting: int | None, max_kv_usage: float = 1.0
) -> None:
    """Refuse at once (429) when the engine's queue or KV cache is full, instead of queueing."""
    if stats is None:
        return
    if max_waiting is not None and stats.num_waiting >= max_waiting:
        raise ServerBusy("The server is busy: too many requests are waiting.", retry_after_s=1.0)
    if stats.num_waiting > 0 and stats.kv_usage >= max_kv_usage:
        raise ServerBusy("The server is busy: the KV cache is full.", retry_after_s=1.0)


def retry_after_header(retry_after_s: float) -> str:
    """``Retry-After`` takes whole seconds; round up so a client never retries too early."""
    return str(max(1, math.ceil(retry_after_s)))
