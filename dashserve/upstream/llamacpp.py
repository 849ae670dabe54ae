"""llama.cpp's ``llama-server`` native ``/completion`` with a token-id prompt.

The request asks for the output's ids (``return_tokens``) and turns off the samplers
llama.cpp enables by default (top-k 40, min-p 0.05) unless the request sets them, so
sampling means what DashScope says. The last streamed object has ``stop: true``,
``stop_type`` (``eos``/``limit``/``word``) and ``timings`` with ``prompt_n`` (tokens
evaluated), ``cache_n`` (prompt tokens reused from the slot's cache) and ``predicted_n``.
Follows llama.cpp's server as vendored by llama-cpp-python 0.3.x (b6xxx builds).
"""

from __future__ import annotations

from typing import Any

from dashserve.contracts.outputs import FinishReason
from dashserve.contracts.params import SamplingParams
from dashserve.upstream.dialect import Chunk, Dialect, RequestPlan

_STOP_TYPES = {"eos": FinishReason.STOP, "word": FinishReason.STOP, "limit": FinishReason.LENGTH}


class LlamaCppCompletion(Dialect):
    kind = "llamacpp"
    path = "/completion"
    health_path = "/health"
    metrics_path = "/metrics"  # served with --metrics
    load_metrics = ("llamacpp:requests_processing", "llamacpp:requests_deferred")

    def request_body(self, plan: RequestPlan, params: SamplingParams) -> dict[str, Any]:
        self.check_common(params)
        if params.min_tokens:
            raise self.refuse("min_tokens", "min_tokens")
        body: dict[str, Any] = {
            "prompt": plan.prompt_token_ids, "n_predict": plan.max_tokens, "stream": True,
            "return_tokens": True, "cache_prompt": True, "timings_per_token": True,
            "temperature": params.temperature, "top_p": params.top_p,
            "top_k": params.effective_top_k or 0, "min_p": params.min_p,
            # the penalty covers the prompt and the output, as on the local engine (llama.cpp
            # servers of 2025 on refuse -1, "the whole context", so name the length)
            "repeat_penalty": params.repetition_penalty,
            "repeat_last_n": len(plan.prompt_token_ids) + plan.max_tokens,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
            "seed": -1 if params.seed is None else params.seed % 2**32,
            "ignore_eos": params.ignore_eos,
        }
        spec = params.structured
        if spec is not None and spec.json_schema is not None:
            body["json_schema"] = spec.json_schema
        elif spec is not None and spec.json_object:
            body["json_schema"] = {"type": "object"}
        return body

    def parse(self, data: dict[str, Any]) -> Chunk | None:
        if "content" not in data and "stop" not in data:
            return None
        ids = data.get("tokens")
        ids = list(ids) if isinstance(ids, list) else None
        timings = data.get("timings") or {}
        common: dict[str, Any] = {
            "text": data.get("content") or "", "token_ids": ids,
            "num_prompt_tokens": data.get("tokens_evaluated"),
            "num_cached_tokens": timings.get("cache_n"),
        }
        if not data.get("stop"):
            return Chunk(**common)
        return Chunk(**common,
                     finish_reason=_STOP_TYPES.get(data.get("stop_type") or "", FinishReason.STOP),
                     num_output_tokens=data.get("tokens_predicted", timings.get("predicted_n")),
                     is_last=True)
