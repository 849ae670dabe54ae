"""Stage contracts leaving the engine: what one step produced for one request."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum


class FinishReason(str, Enum):
    """Why a sample stopped. ``ABORT`` is for aborted requests (client gone, shutdown)."""

    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class TopLogprob:
    """One alternative at a position: token id, its text, raw bytes and log-probability."""

    token_id: int
    token: str
    bytes: list[int]
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The sampled token at a position and the most likely alternatives.

    Log-probabilities are taken from the distribution actually sampled from (after
    temperature, penalties and top-k/top-p), so they agree with the sampler.
    """

    token_id: int
    token: str
    bytes: list[int]
    logprob: float
    top_logprobs: list[TopLogprob] = field(default_factory=list)


@dataclass(slots=True)
class EngineEvent:
    """New output of one sample (``index`` in 0..n-1) of one request, after one engine step.

    ``text`` is the newly decoded text (never splits a UTF-8 character; stop strings are
    held back until they can no longer match and are never emitted). ``token_ids`` are the
    new tokens (a token may produce no text yet). Counts are cumulative and exact:
    ``num_output_tokens`` for this sample, ``num_prompt_tokens`` and ``num_cached_tokens``
    (prompt tokens served from the prefix cache) for the request. ``finished`` is set on
    the very last event of the request, once every sample has a finish reason.
    """

    request_id: str
    index: int
    token_ids: list[int]
    text: str
    finish_reason: FinishReason | None
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    finished: bool = False
    # The token ids generated inside a thinking block so far (cumulative), for usage reporting.
    num_reasoning_tokens: int = 0
    # Explicit cache: prompt tokens this request newly pinned (0 when the prefix was pinned).
    num_cache_created_tokens: int = 0


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot for admission control and metrics."""

    num_waiting: int
    num_running: int
    num_kv_blocks_total: int
    num_kv_blocks_free: int
    num_preemptions: int = 0
    num_prefix_cache_hits: int = 0
    num_kv_blocks_pinned: int = 0

    @classmethod
    def summed(cls, all_stats: Iterable[EngineStats]) -> EngineStats:
        """Several engines' stats as one (a pool's, or a server's over its models)."""
        items = list(all_stats)
        if len(items) == 1 and type(items[0]) is cls:
            return items[0]  # frozen: shared as it is
        return cls(*(sum(getattr(s, f.name) for s in items) for f in dataclasses.fields(cls)))

    @property
    def kv_usage(self) -> float:
        if self.num_kv_blocks_total == 0:
            return 0.0
        return 1.0 - self.num_kv_blocks_free / self.num_kv_blocks_total
