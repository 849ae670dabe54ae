"""How much room a key had at its last admission here: may its next run start before admitting?

A shared limiter answers ``acquire`` only after a round trip to Redis. When this process's last
admission of a key, a moment ago, counted it well inside every limit, the next ``acquire`` will
almost surely succeed: the request may go to its engine while the admission is being asked,
and is aborted, unbilled, in the rare case it is refused. Only the start moves earlier; the
decision is still the shared limiter's, exact and atomic. A key near any limit, refused, or
not admitted here within ``fresh_s`` waits for its admission as before.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from dashserve.platform.limits import LimitPolicy

FRESH_S = 5.0  # how long the counts of an admission stand for the key's room
SHARE = 0.5  # a run starts early only while every count stays within this share of its limit
_SUBJECTS = 10_000  # keys remembered (the least recently admitted are forgotten)


@dataclass(slots=True)
class _Counts:
    at: float  # when they were read (monotonic)
    running: int  # requests holding a concurrency slot, the admitted one included
    requests: int  # requests in the RPM window
    tokens: int  # tokens in the TPM window


class Headroom:
    """The counts each key's last admission returned, less what this process has released."""

    def __init__(self, *, fresh_s: float = FRESH_S, share: float = SHARE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fresh_s = fresh_s
        self._share = share
        self._clock = clock
        self._counts: OrderedDict[str, _Counts] = OrderedDict()
        self._asking: dict[str, int] = {}  # admissions awaiting their answer, per key

    def ample(self, subject: str, policy: LimitPolicy, tokens: int) -> bool:
        """True when one more request of ``tokens`` (and those being admitted) fits within
        ``share`` of each of the key's limits, by counts read less than ``fresh_s`` ago."""
        counts = self._counts.get(subject)
        if counts is None or self._clock() - counts.at > self._fresh_s:
            return False
        more = self._asking.get(subject, 0) + 1
        return (self._fits(counts.running + more, policy.max_concurrency)
                and self._fits(counts.requests + more, policy.rpm)
                and self._fits(counts.tokens + more * tokens, policy.tpm))

    def _fits(self, count: int, limit: int | None) -> bool:
        return limit is None or count <= limit * self._share

    def asking(self, subject: str, delta: int) -> None:
        """An admission of ``subject`` went out (+1) or was answered (-1)."""
        n = self._asking.get(subject, 0) + delta
        if n > 0:
            self._asking[subject] = n
        else:
            self._asking.pop(subject, None)

    def admitted(self, subject: str, running: int, requests: int, tokens: int) -> None:
        """The shared counts, this admission included, as the limiter returned them."""
        self._counts.pop(subject, None)
        self._counts[subject] = _Counts(self._clock(), running, requests, tokens)
        while len(self._counts) > _SUBJECTS:
            self._counts.popitem(last=False)

    def released(self, subject: str) -> None:
        """One of this process's requests gave back its concurrency slot."""
        counts = self._counts.get(subject)
        if counts is not None and counts.running > 0:
            counts.running -= 1

    def forget(self, subject: str) -> None:
        """Refused, or the limiter unreachable: the next admission is waited for."""
        self._counts.pop(subject, None)
