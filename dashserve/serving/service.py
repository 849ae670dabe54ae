"""GenerationService: resolve the model, validate, build the prompt, admit, start the run.

This is the only place the platform (the gate) meets the engine. Everything that can
be refused is refused before admission, so a 4xx never costs a reservation; once
admitted, the ``GenerationRun`` guarantees exactly one ``Gate.finish``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dashserve.errors import DashServeError, InvalidRequest, PromptTooLongError, ServerBusy
from dashserve.platform.gate import Gate, Principal
from dashserve.serving.features import resolve_features
from dashserve.serving.normalize import (
    check_input_length,
    check_ranges,
    sampling_params,
    split_stop,
)
from dashserve.serving.prompt import build_prompt, explicit_cache_tokens
from dashserve.serving.profiles import ModelProfile
from dashserve.serving.registry import ModelRegistry
from dashserve.serving.request import GenerationRequest
from dashserve.serving.run import SHUTDOWN, GenerationRun, Plan

log = logging.getLogger(__name__)
T = TypeVar("T")

# DashScope's explicit cache: a marked prefix shorter than this is not cached; a cached one
# lives this long after its last use.
EXPLICIT_CACHE_MIN_TOKENS = 1024
EXPLICIT_CACHE_TTL_S = 300.0
# Bounds checked before any prompt is rendered (a prompt of more cannot be useful).
MAX_MESSAGES = 2048
MAX_TOOLS = 128
PROMPT_THREADS = 4  # prompts are rendered and tokenized on these, never on the event loop


def check_least_length(request: GenerationRequest, profile: ModelProfile,
                       max_token_bytes: int | None) -> None:
    """Refuse, without tokenizing it, a prompt whose text alone must exceed the input limit
    (a token stands for at most ``max_token_bytes`` bytes, and a character for at least one)."""
    if not max_token_bytes:
        return
    chars = sum(len(m.content) for m in request.messages)
    least = chars // max_token_bytes
    limit = request.params.max_input_tokens or profile.max_input_tokens
    limit = min(limit, profile.context_length - 1)
    if least > limit:
        raise PromptTooLongError(f"Range of input length should be [1, {limit}]; the input has "
                                 f"at least {least} tokens", param="input")


def check_counts(request: GenerationRequest) -> None:
    """Refuse requests with more messages or tools than any prompt can use."""
    if len(request.messages) > MAX_MESSAGES:
        raise InvalidRequest(f"too many messages: {len(request.messages)} (at most "
                             f"{MAX_MESSAGES})", param="messages")
    if len(request.tools) > MAX_TOOLS:
        raise InvalidRequest(f"too many tools: {len(request.tools)} (at most {MAX_TOOLS})",
                             param="tools")


class GenerationService:
    """Turns ``GenerationRequest``s into running ``GenerationRun``s.

    ``max_inflight_per_engine`` bounds the requests one engine holds (running or
    queued); past it new requests get 429 ``Throttling`` with a retry hint.
    """

    def __init__(self, registry: ModelRegistry, gate: Gate, *,
                 max_inflight_per_engine: int = 256) -> None:
        self.registry = registry
        self.gate = gate
        self.max_inflight_per_engine = max_inflight_per_engine
        self._inflight: defaultdict[int, int] = defaultdict(int)
        self._runs: set[GenerationRun] = set()
        self._prompt_pool = ThreadPoolExecutor(PROMPT_THREADS,
                                               thread_name_prefix="dashserve-prompt")

    async def off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """Run CPU-heavy request work (templates, tokenization) on the prompt threads."""
        return await asyncio.get_running_loop().run_in_executor(self._prompt_pool, work, *args)

    def plan(self, request: GenerationRequest) -> Plan:
        """Validate ``request`` against its model and build the engine's input."""
        check_counts(request)
        served = self.registry.get(request.model)
        params = request.params
        profile = served.profile
        check_ranges(params, profile)
        features = resolve_features(request, profile)
        tokenizer = served.engine.tokenizer
        check_least_length(request, profile, getattr(tokenizer, "max_token_bytes", None))
        prompt_ids = build_prompt(tokenizer, request.messages, enable_thinking=features.thinking,
                                  tools=features.template_tools or None)
        check_input_length(params, profile, len(prompt_ids))
        stop = split_stop(params.stop, served.engine.model_info.vocab_size, tokenizer.decode)
        sampling = sampling_params(params, profile, len(prompt_ids), stop, features)
        explicit = any(m.cache_until is not None for m in request.messages)
        if explicit:
            pinned = explicit_cache_tokens(
                tokenizer, request.messages, prompt_ids, enable_thinking=features.thinking,
                tools=features.template_tools or None)
            if pinned >= EXPLICIT_CACHE_MIN_TOKENS:
                sampling = dataclasses.replace(
                    sampling, pin_prefix_tokens=pinned, pin_ttl_s=EXPLICIT_CACHE_TTL_S)
        return Plan(served, tuple(prompt_ids), sampling, parse_tools=features.parse_tools,
                    parallel_tool_calls=request.parallel_tool_calls, explicit_cache=explicit)

    async def start(self, request: GenerationRequest, principal: Principal, *,
                    on_admitted: Callable[[], None] | None = None) -> GenerationRun:
        """Plan, admit and start ``request``. The caller must ``aclose()`` the run.
        ``on_admitted`` is called once the request is admitted (from then on its run bills
        it, errors included)."""
        plan = await self.off_loop(self.plan, request)
        key = id(plan.served.engine)
        if self._inflight[key] >= self.max_inflight_per_engine:
            raise ServerBusy(
                f"Requests throttling triggered: {self._inflight[key]} requests are already "
                f"running or queued on model {request.model!r}.", retry_after_s=1.0)
        estimate = len(plan.prompt_token_ids) + (plan.sampling.max_tokens or 0) * plan.sampling.n
        admission = await self.gate.admit(principal, request.request_id, request.model, estimate)
        if on_admitted is not None:
            on_admitted()
        self._inflight[key] += 1
        run: GenerationRun

        def release() -> None:
            self._inflight[key] -= 1
            self._runs.discard(run)

        run = GenerationRun(request.request_id, plan, admission, self.gate, release)
        self._runs.add(run)
        run.start()
        if plan.sampling.structured is not None:  # a grammar the engine refuses is a 400
            try:
                await run.accepted()
            except DashServeError as exc:
                await run.aclose(status_code=exc.status_code)
                raise
        return run

    @property
    def num_inflight(self) -> int:
        return len(self._runs)

    async def close_all(self) -> None:
        """Abort and bill every run still open (server shutdown)."""
        runs = list(self._runs)
        if runs:
            log.warning("aborting %d requests still running at shutdown", len(runs))
            await asyncio.gather(*(run.aclose(status_code=SHUTDOWN) for run in runs))
        self._prompt_pool.shutdown(wait=False, cancel_futures=True)
