"""Per-request generation parameters as the engine sees them, validated on construction.

An out-of-range value raises ``InvalidRequest`` naming the parameter (a 400 for clients).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dashserve.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class StructuredOutputSpec:
    """What the output must match. Exactly one of the fields is set.

    json_schema: a JSON schema (dict) the output must validate against.
    json_object: any JSON object.
    grammar: a Lark grammar (llguidance syntax), for internal uses such as forced tool calls.
    """

    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    grammar: str | None = None


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one request samples. Every sequence in a batch keeps its own copy.

    top_k None, 0 or above 100 disables top-k (DashScope's documented rule); temperature 0
    is greedy. ``max_tokens`` None means "until the context is full". ``stop`` strings are
    matched on the decoded text and never emitted; ``stop_token_ids`` end generation on
    that token (which is not emitted as text). ``n`` samples share the prompt's KV blocks.
    ``seed`` makes sampling reproducible whatever else is in the batch; ``seed_requested``
    says the client chose it (False: the model's default seed), which matters only where a
    seed may not be followed (an upstream server started without deterministic sampling).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    seed_requested: bool = False
    max_tokens: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    structured: StructuredOutputSpec | None = None
    skip_special_tokens: bool = True
    # Thinking: when set, the engine forces ``think_end_token_ids`` once this many tokens were
    # generated while inside a thinking block (opened by ``think_start_id`` or by the prompt).
    thinking_budget: int | None = None
    starts_in_thinking: bool = False
    # Explicit cache: once computed, the KV blocks of the first ``pin_prefix_tokens`` prompt
    # tokens stay resident for ``pin_ttl_s`` seconds (refreshed by every request that pins them).
    pin_prefix_tokens: int = 0
    pin_ttl_s: float = 300.0
    # Prefix-cache partition: requests reuse each other's KV blocks only with equal salts
    # (the server salts by workspace, so one tenant cannot probe another's prompts).
    cache_salt: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        _check(self.temperature >= 0.0, "temperature", "temperature must be >= 0")
        _check(0.0 < self.top_p <= 1.0, "top_p", "top_p must be in (0, 1]")
        _check(self.top_k is None or self.top_k >= 0, "top_k", "top_k must be >= 0")
        _check(0.0 <= self.min_p <= 1.0, "min_p", "min_p must be in [0, 1]")
        _check(self.repetition_penalty > 0.0, "repetition_penalty", "repetition_penalty must be > 0")
        _check(-2.0 <= self.presence_penalty <= 2.0, "presence_penalty",
               "presence_penalty must be in [-2, 2]")
        _check(-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty",
               "frequency_penalty must be in [-2, 2]")
        _check(self.seed is None or 0 <= self.seed < 2**63, "seed", "seed must be >= 0")
        _check(self.max_tokens is None or self.max_tokens >= 1, "max_tokens",
               "max_tokens must be >= 1")
        _check(self.min_tokens >= 0, "min_tokens", "min_tokens must be >= 0")
        _check(1 <= self.n <= 4, "n", "n must be in [1, 4]")
        _check(0 <= self.top_logprobs <= 5, "top_logprobs", "top_logprobs must be in [0, 5]")
        _check(all(isinstance(s, str) and s for s in self.stop), "stop",
               "stop strings must be non-empty strings")
        _check(self.thinking_budget is None or self.thinking_budget >= 1, "thinking_budget",
               "thinking_budget must be >= 1")
        _check(self.pin_prefix_tokens >= 0 and self.pin_ttl_s > 0, "cache_control",
               "the cached prefix must be >= 0 tokens with a positive lifetime")

    @property
    def effective_top_k(self) -> int | None:
        """top_k after DashScope's rule: None, 0 or > 100 mean no top-k."""
        if self.top_k is None or self.top_k == 0 or self.top_k > 100:
            return None
        return self.top_k

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.effective_top_k == 1


def _check(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise InvalidRequest(message, param=param)
