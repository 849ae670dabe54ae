"""OpenAI ``/v1/completions`` dialects: any compatible server (text) and vLLM (token ids).

``openai`` sends the rendered prompt as text and reads text back (usage from upstream);
the sampling extensions every common server accepts (``top_k``, ``min_p``,
``repetition_penalty``) go as extra fields. ``vllm`` sends the prompt's token ids and asks
for the output's ids (``return_token_ids``, vLLM >= 0.10.2), so the front detokenizes, stops
and counts exactly as its own engine; structured output goes as ``response_format``.
"""

from __future__ import annotations

from typing import Any

from dashserve.contracts.params import SamplingParams
from dashserve.upstream.dialect import Chunk, Dialect, RequestPlan, finish_reason, usage_counts


class OpenAICompletions(Dialect):
    """Any OpenAI-compatible server's text completions (vLLM, SGLang, llama-server, ...)."""

    kind = "openai"
    path = "/v1/completions"
    health_path = "/v1/models"
    sends_token_ids = False

    def request_body(self, plan: RequestPlan, params: SamplingParams) -> dict[str, Any]:
        self.check_common(params)
        if params.stop_token_ids:
            raise self.refuse("stop", "stop token ids")
        if params.min_tokens:
            raise self.refuse("min_tokens", "min_tokens")
        body: dict[str, Any] = {
            "model": plan.model, "prompt": self.prompt(plan), "max_tokens": plan.max_tokens,
            "stream": True, "stream_options": {"include_usage": True},
            **self.sampling(params),
        }
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def prompt(self, plan: RequestPlan) -> str | list[int]:
        return plan.prompt_text

    def sampling(self, params: SamplingParams) -> dict[str, Any]:
        """The OpenAI fields plus the extensions vLLM, SGLang and llama-server all read."""
        out: dict[str, Any] = {
            "temperature": params.temperature, "top_p": params.top_p,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
            "top_k": params.effective_top_k or -1, "min_p": params.min_p,
            "repetition_penalty": params.repetition_penalty,
        }
        if params.seed is not None:
            out["seed"] = params.seed
        if params.ignore_eos:
            out["ignore_eos"] = True
        spec = params.structured
        if spec is not None and spec.json_schema is not None:
            out["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": spec.json_schema, "strict": True}}
        elif spec is not None and spec.json_object:
            out["response_format"] = {"type": "json_object"}
        return out

    def parse(self, data: dict[str, Any]) -> Chunk | None:
        prompt, completion, cached = usage_counts(data.get("usage"))
        choices = data.get("choices") or []
        if not choices:
            if prompt is None:
                return None
            return Chunk(num_prompt_tokens=prompt, num_output_tokens=completion,
                         num_cached_tokens=cached, is_last=True)
        choice = choices[0]
        text = choice.get("text") or ""
        ids = choice.get("token_ids") if self.sends_token_ids else None
        if self.sends_token_ids and not isinstance(ids, list):
            if text:  # the ids of this text are lost: stop strings and counts would be wrong
                raise ValueError("the upstream streams text without token_ids "
                                 "(return_token_ids needs vLLM 0.10.2 or later)")
            ids = []
        return Chunk(text=text, token_ids=list(ids) if isinstance(ids, list) else None,
                     finish_reason=finish_reason(choice.get("finish_reason")),
                     num_prompt_tokens=prompt, num_output_tokens=completion,
                     num_cached_tokens=cached)


class VllmCompletions(OpenAICompletions):
    """vLLM's completions with token-id prompts and token-id output (vLLM >= 0.10.2)."""

    kind = "vllm"
    health_path = "/health"
    sends_token_ids = True
    metrics_path = "/metrics"
    load_metrics = ("vllm:num_requests_running", "vllm:num_requests_waiting")

    def request_body(self, plan: RequestPlan, params: SamplingParams) -> dict[str, Any]:
        self.check_common(params)
        body: dict[str, Any] = {
            "model": plan.model, "prompt": plan.prompt_token_ids, "max_tokens": plan.max_tokens,
            "stream": True, "stream_options": {"include_usage": True},
            "return_token_ids": True, "skip_special_tokens": False,
            **self.sampling(params),
        }
        if params.min_tokens:
            body["min_tokens"] = params.min_tokens
        if params.stop_token_ids:
            body["stop_token_ids"] = list(params.stop_token_ids)
        if params.cache_salt:
            body["cache_salt"] = params.cache_salt
        # structured output goes as ``response_format`` (``sampling``): vLLM's completions
        # honour it, while 0.32 ignores the older ``guided_json`` without a word
        return body
