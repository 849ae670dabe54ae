"""What every upstream kind shares: the parsed stream chunk, the dialect contract, SSE lines.

A dialect turns the front's token ids and ``SamplingParams`` into one upstream's JSON body,
and each line of that upstream's stream back into a ``Chunk``. It refuses, with DashScope's
400, any parameter its server cannot honour: nothing is silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dashserve.contracts.outputs import FinishReason
from dashserve.contracts.params import SamplingParams
from dashserve.errors import UnsupportedFeature


@dataclass(frozen=True, slots=True)
class Chunk:
    """One parsed piece of an upstream stream.

    ``token_ids`` are the new output tokens when the upstream reports them (the front then
    detokenizes, matches stop strings and counts exactly as its own engine does); None when
    only ``text`` came back. Counts are cumulative and None when this chunk carries none.
    """

    text: str = ""
    token_ids: list[int] | None = None
    finish_reason: FinishReason | None = None
    num_prompt_tokens: int | None = None
    num_output_tokens: int | None = None
    num_cached_tokens: int | None = None
    is_last: bool = False  # the upstream says nothing more follows (usage chunk, stop flag)
    # token_ids and text are everything generated so far, not just the new part (SGLang's
    # default streaming); the front slices off what it already has
    is_cumulative: bool = False


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """What a dialect needs beyond the params: the model name upstream knows, the budget.

    ``max_tokens`` is what to ask the upstream for (the front may stop earlier itself, e.g.
    an answer limit after reasoning); ``prompt_text`` is the rendered prompt for text-only
    dialects.
    """

    model: str
    prompt_token_ids: list[int]
    max_tokens: int
    prompt_text: str = ""


FINISH_REASONS = {
    "stop": FinishReason.STOP, "eos": FinishReason.STOP, "word": FinishReason.STOP,
    "length": FinishReason.LENGTH, "limit": FinishReason.LENGTH,
    "abort": FinishReason.ABORT,
}


def finish_reason(value: Any) -> FinishReason | None:
    """An upstream's finish reason (string, or SGLang's ``{"type": ...}``) as ours."""
    if isinstance(value, dict):
        value = value.get("type")
    if not value or not isinstance(value, str):
        return None
    return FINISH_REASONS.get(value, FinishReason.STOP)


def sse_data(line: str) -> dict[str, Any] | None:
    """The JSON object of one ``data:`` line; None for other lines and ``[DONE]``."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == "[DONE]":
        return None
    data = json.loads(payload)
    return data if isinstance(data, dict) else None


class Dialect:
    """Request mapping and response parsing of one upstream kind (subclasses fill them in)."""

    kind = "base"
    path = "/v1/completions"  # where generation requests go
    health_path = "/health"  # answers 200 while the server takes requests
    sends_token_ids = True  # False: the prompt goes as text and only text comes back
    # Prometheus endpoint and the gauges whose sum is the requests running and queued there
    # (from every front, not just this one); None: the kind exposes none we read
    metrics_path: str | None = None
    load_metrics: tuple[str, ...] = ()
    # where the server describes how it was started (read once, by the probe task), the
    # first that answers; () for kinds whose description changes nothing we say
    info_paths: tuple[str, ...] = ()

    def info_warnings(self, info: dict[str, Any]) -> list[str]:
        """What the operator should hear about a server so described (``info_paths``)."""
        return []

    def ignores_seeds(self, info: dict[str, Any]) -> bool:
        """A server so described does not follow ``seed``: a request whose client set one
        goes to another endpoint, or is refused (the pool's rule)."""
        return False

    def request_body(self, plan: RequestPlan, params: SamplingParams) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, data: dict[str, Any]) -> Chunk | None:
        """The chunk in one streamed JSON object (None: nothing of ours in it)."""
        raise NotImplementedError

    def refuse(self, param: str, what: str) -> UnsupportedFeature:
        return UnsupportedFeature(f"{what} is not supported by this model's upstream "
                                  f"({self.kind} server)", param=param)

    def check_common(self, params: SamplingParams) -> None:
        """Refusals shared by every kind: what no upstream can do for the front."""
        if params.n != 1:
            raise self.refuse("n", "n > 1")
        if params.logprobs or params.top_logprobs:
            raise self.refuse("logprobs", "logprobs")
        if params.thinking_budget is not None and not self.sends_token_ids:
            raise self.refuse("thinking_budget", "thinking_budget")
        if params.pin_prefix_tokens:
            raise self.refuse("cache_control", "explicit cache (cache_control)")
        if params.structured is not None and params.structured.grammar is not None:
            raise self.refuse("tool_choice", "a forced tool call (grammar)")


def metrics_load(text: str, names: tuple[str, ...]) -> int:
    """The sum of the named gauges (every label set) in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(names):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in names:
                total += float(line.rsplit(" ", 1)[-1])
    return int(total)


def usage_counts(usage: Any) -> tuple[int | None, int | None, int | None]:
    """(prompt, completion, cached) tokens of an OpenAI ``usage`` object (None when absent)."""
    if not isinstance(usage, dict):
        return None, None, None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return usage.get("prompt_tokens"), usage.get("completion_tokens"), cached
