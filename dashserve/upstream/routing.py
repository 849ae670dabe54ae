"""Which endpoint of a pool takes a request: prefix affinity with bounded load, else the
least outstanding.

The router remembers, per endpoint, the prompts it recently sent there as chained hashes
of ``block_tokens``-token blocks (the way a prefix cache keys its KV blocks). A new prompt
goes to the endpoint holding its longest cached prefix (at least one block), so requests
sharing a prefix land on one endpoint and its prefix cache stays warm. Affinity yields to
load: an endpoint takes the request only while its load (requests outstanding from this
front, plus those its metrics show from other fronts) stays within ``load_factor`` times the
pool's mean (consistent hashing with bounded loads). Otherwise,
and for prompts nobody has seen, the least outstanding endpoint takes it; ties are broken
by a hash of the prompt's first block, so distinct prompts spread over an idle pool.

::

    prompt   [ b0 | b1 | b2 | b3 | tail ]      h1 = H(b0), h2 = H(h1, b1), ...
    endpoint A remembers h1 h2 h3  -> match 3 blocks
    endpoint B remembers h1        -> match 1 block     => A (unless A is over its bound)
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)


class Routable(Protocol):
    url: str
    is_healthy: bool

    @property
    def load(self) -> int: ...


E = TypeVar("E", bound=Routable)


class Rotation:
    """Whether a pool member is in rotation: taken out when it fails, put back once a
    probe succeeds (each change logged once). ``noun`` names the member in the log."""

    url: str
    noun = "upstream"

    def __init__(self) -> None:
        self.is_healthy = True

    def eject(self, reason: str = "") -> None:
        if self.is_healthy:
            log.warning("%s %s taken out of rotation: %s", self.noun, self.url,
                        reason or "failed")
        self.is_healthy = False

    def restore(self) -> None:
        if not self.is_healthy:
            log.warning("%s %s back in rotation", self.noun, self.url)
        self.is_healthy = True


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """How a pool spreads its requests (see the module docstring)."""

    block_tokens: int = 16
    load_factor: float = 1.25
    max_blocks_per_endpoint: int = 200_000  # remembered block hashes (oldest forgotten)

    def __post_init__(self) -> None:
        if self.block_tokens < 1 or self.load_factor < 1.0 or self.max_blocks_per_endpoint < 1:
            raise ValueError("block_tokens and max blocks must be >= 1, load factor >= 1")


def block_hashes(prompt_token_ids: Sequence[int], block_tokens: int) -> list[bytes]:
    """Chained hashes of the prompt's full blocks (the last token never counts: a cache
    must leave one token to compute)."""
    out: list[bytes] = []
    prev = b""
    usable = (len(prompt_token_ids) - 1) // block_tokens * block_tokens
    for start in range(0, usable, block_tokens):
        block = prompt_token_ids[start:start + block_tokens]
        data = prev + b"".join(t.to_bytes(4, "little", signed=False) for t in block)
        prev = hashlib.blake2b(data, digest_size=16).digest()
        out.append(prev)
    return out


class Router:
    """Picks an endpoint per prompt and remembers where each prefix went."""

    def __init__(self, policy: RoutingPolicy | None = None) -> None:
        self.policy = policy or RoutingPolicy()
        self._seen: dict[str, OrderedDict[bytes, None]] = {}

    def _matched(self, url: str, hashes: list[bytes]) -> int:
        seen = self._seen.get(url)
        if not seen:
            return 0
        n = 0
        for h in hashes:
            if h not in seen:
                break
            n += 1
        return n

    def pick(self, endpoints: Sequence[E], prompt_token_ids: Sequence[int],
             exclude: Collection[E] = ()) -> E | None:
        """The endpoint for this prompt among healthy ones not in ``exclude`` (None: none)."""
        candidates = [e for e in endpoints if e.is_healthy and e not in exclude]
        if not candidates:
            return None
        if len(endpoints) == 1:  # nothing to choose between, now or later: no hashing
            return candidates[0]
        hashes = block_hashes(prompt_token_ids, self.policy.block_tokens)
        total = sum(e.load for e in candidates)
        bound = math.ceil(self.policy.load_factor * (total + 1) / len(candidates))
        best: E | None = None
        best_match = 0
        for endpoint in candidates:
            match = self._matched(endpoint.url, hashes)
            if match > best_match and endpoint.load + 1 <= bound:
                best, best_match = endpoint, match
        if best is None:
            best = min(candidates, key=lambda e: (e.load,
                                                  _tie(hashes, prompt_token_ids, e.url)))
        self._remember(best.url, hashes)
        return best

    def _remember(self, url: str, hashes: list[bytes]) -> None:
        seen = self._seen.setdefault(url, OrderedDict())
        for h in hashes:
            seen[h] = None
            seen.move_to_end(h)
        while len(seen) > self.policy.max_blocks_per_endpoint:
            seen.popitem(last=False)


def _tie(hashes: list[bytes], prompt_token_ids: Sequence[int], url: str) -> bytes:
    """Rendezvous order of ``url`` for this prompt (its first block, or the whole prompt)."""
    key = hashes[0] if hashes else b"".join(
        t.to_bytes(4, "little", signed=False) for t in prompt_token_ids)
    return hashlib.blake2b(key + url.encode(), digest_size=8).digest()
