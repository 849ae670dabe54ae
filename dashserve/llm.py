"""LLM: the offline, batch API over the engine (no server, no asyncio)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.outputs import FinishReason, TokenLogprob
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.engine.engine import EngineConfig, LLMEngine


@dataclass(slots=True)
class CompletionOutput:
    """One sample of a finished request."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None
    logprobs: list[TokenLogprob] | None = None
    num_reasoning_tokens: int = 0


@dataclass(slots=True)
class RequestOutput:
    """A finished request: its samples and exact token counts."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    num_cached_tokens: int = 0

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return sum(len(o.token_ids) for o in self.outputs)


class LLM:
    """``LLM(model=DIR).generate(prompts, params)``: prompts are strings (encoded as is, no
    chat template) or lists of token ids; ``chat(messages)`` applies the model's template."""

    def __init__(self, model: str, **options: Any) -> None:
        self.engine = LLMEngine(EngineConfig(model=model, **options))
        self.tokenizer = self.engine.tokenizer
        self._ids = itertools.count()

    def generate(
        self,
        prompts: str | Sequence[str] | Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        mm_inputs: Sequence[Sequence[MultiModalInput]] | None = None,
    ) -> list[RequestOutput]:
        """``mm_inputs``: per prompt, the images whose placeholder tokens it holds (vision
        models; prompts given as token ids)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        token_lists = [self.tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(token_lists)
        if len(params) != len(token_lists):
            raise ValueError("give one SamplingParams, or one per prompt")
        media = list(mm_inputs) if mm_inputs is not None else [()] * len(token_lists)
        if len(media) != len(token_lists):
            raise ValueError("give one list of mm_inputs per prompt")
        results: dict[str, RequestOutput] = {}  # in prompt order
        for ids, p, items in zip(token_lists, params, media, strict=True):
            request_id = f"offline-{next(self._ids)}"
            self.engine.add_request(EngineRequest(request_id, ids, p, tuple(items)))
            results[request_id] = RequestOutput(
                request_id, ids, [CompletionOutput(i, "", [], None) for i in range(p.n)]
            )
        while self.engine.has_unfinished():
            for event in self.engine.step():
                result = results[event.request_id]
                out = result.outputs[event.index]
                out.text += event.text
                out.token_ids.extend(event.token_ids)
                out.finish_reason = event.finish_reason
                out.num_reasoning_tokens = event.num_reasoning_tokens
                result.num_cached_tokens = event.num_cached_tokens
                if event.logprobs is not None:
                    out.logprobs = (out.logprobs or []) + event.logprobs
        return list(results.values())

    def chat(
        self, messages: list[dict[str, Any]], params: SamplingParams | None = None,
        **template_kwargs: Any,
    ) -> RequestOutput:
        prompt = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, **template_kwargs
        )
        return self.generate([self.tokenizer.encode(prompt)], params)[0]
