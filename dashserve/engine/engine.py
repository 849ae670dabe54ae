"""LLMEngine: add requests, run steps (schedule → forward → sample → stop), emit EngineEvents."""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from dashserve.contracts.outputs import EngineEvent, EngineStats
from dashserve.contracts.params import SamplingParams, StructuredOutputSpec
from dashserve.contracts.request import EngineRequest
from dashserve.engine.audio_requests import check_audio_inputs
from dashserve.engine.block_manager import BlockManager
from dashserve.engine.config import EngineConfig
from dashserve.engine.mm_requests import check_mm_inputs, place
from dashserve.engine.request_state import RequestState
from dashserve.engine.request_table import RequestTable
from dashserve.engine.runner import CacheConfig, ModelRunner
from dashserve.engine.scheduler import ScheduledChunk, Scheduler, SchedulerConfig
from dashserve.engine.sequence import Sequence, SequenceStatus
from dashserve.engine.stepper import StepPostprocessor
from dashserve.errors import InvalidRequest, PromptTooLong
from dashserve.model.config import ModelConfig
from dashserve.tokenizer import Tokenizer

__all__ = ["EngineConfig", "LLMEngine", "StepRunner"]

log = logging.getLogger(__name__)


class StepRunner(Protocol):
    """What the engine needs of a model runner (``ModelRunner``, or a fake in tests)."""

    model_dir: Path
    model_config: ModelConfig
    cache: CacheConfig  # block size, number of KV blocks, context length that fits
    weight_bytes: int  # bytes one decode step reads
    kernels_pending: bool  # native CPU kernels still to come (see ``attach_kernels``)

    def execute(
        self, decodes: list[ScheduledChunk], prefills: list[ScheduledChunk]
    ) -> torch.Tensor:
        """Logits [number of chunks that sample, vocab], in chunk order (decodes first)."""
        ...

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy KV blocks src -> dst (copy-on-write of forked samples)."""
        ...

    def attach_kernels(self) -> int:
        """Switch to native kernels built since start-up; returns how many modules switched."""
        ...


class LLMEngine:
    """The synchronous engine. Not thread-safe: one thread calls add/abort/step.

    It wires the stages of a step, each the owner of its own state: the scheduler (sequences
    and KV blocks), the runner (model and KV cache), the request table (requests, samples,
    forks) and the step postprocessor (sampling, stops, events).
    """

    def __init__(self, config: EngineConfig,
                 progress: Callable[[int, int], None] | None = None, *,
                 runner: StepRunner | None = None, tokenizer: Tokenizer | None = None) -> None:
        """``progress(done, total)`` follows the weights as they load. ``runner`` replaces
        loading ``config.model`` (its tokenizer is read from ``runner.model_dir`` unless
        ``tokenizer`` is given)."""
        self.config = config
        self.runner: StepRunner = runner or ModelRunner.load(config, progress)
        self.tokenizer = tokenizer or Tokenizer.from_dir(self.runner.model_dir)
        cache = self.runner.cache
        self.block_manager = BlockManager(
            cache.num_blocks, cache.block_size, config.enable_prefix_caching
        )
        self.scheduler = Scheduler(
            SchedulerConfig(config.max_num_seqs, config.max_num_batched_tokens),
            self.block_manager,
        )
        self.requests = RequestTable(self.tokenizer, self.model_config.vocab_size)
        self.eos_token_ids = frozenset(
            [*self.model_config.eos_token_ids, *self.tokenizer.stop_token_ids]
        )
        self.post = StepPostprocessor(self.requests, self.scheduler, self.tokenizer,
                                      self.eos_token_ids, self.runner.copy_blocks)
        log.info("engine ready: %s, max_model_len %d", self.model_dir, self.max_model_len)

    @property
    def model_dir(self) -> Path:
        return self.runner.model_dir

    @property
    def model_config(self) -> ModelConfig:
        return self.runner.model_config

    @property
    def max_model_len(self) -> int:
        return self.runner.cache.max_model_len

    @property
    def weight_bytes(self) -> int:
        return self.runner.weight_bytes

    @property
    def kernels_pending(self) -> bool:
        """Native CPU kernels that a background build will bring (see attach_kernels)."""
        return self.runner.kernels_pending

    @kernels_pending.setter
    def kernels_pending(self, value: bool) -> None:
        self.runner.kernels_pending = value

    @property
    def grammar_compiler(self) -> Any | None:
        return self.requests.grammar_compiler

    def attach_kernels(self) -> int:
        """Switch to native kernels built since start-up; only between steps (the engine's
        own thread). Returns how many modules switched."""
        count = self.runner.attach_kernels()
        log.info("native CPU kernels in use from now on (%d modules switched)", count)
        return count

    def warm_up(self) -> float:
        """Pay the first steps' one-off costs before serving: a short prefill and decode with
        the usual sampling settings, then a constrained one (the grammar library's set-up)
        when it is installed. Returns the seconds spent."""
        started = time.monotonic()
        prompt = self.tokenizer.encode("Warm-up: " + "a quick brown fox jumps over the dog. " * 2)
        # a prefill and a decode step; then a prefill (its blocks mostly cached) whose token
        # is sampled under a grammar
        runs = [SamplingParams(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05,
                               presence_penalty=1.5, seed=0, max_tokens=2, ignore_eos=True)]
        if importlib.util.find_spec("llguidance") is not None:
            runs.append(SamplingParams(temperature=0.7, top_k=20, seed=0, max_tokens=1,
                                       structured=StructuredOutputSpec(json_object=True)))
        for i, params in enumerate(runs):
            request_id = f"warm-up-{i}"
            self.add_request(EngineRequest(request_id, prompt, params))
            while request_id in self.requests:
                self.step()
        return time.monotonic() - started

    # ----- requests -------------------------------------------------------------------------

    def add_request(self, request: EngineRequest) -> None:
        """Validate and queue a request; raises InvalidRequest before scheduling anything."""
        request_id, prompt_token_ids, params = (request.request_id, request.prompt_token_ids,
                                                request.params)
        if request_id in self.requests:
            raise InvalidRequest(f"request {request_id!r} is already running", param="request_id")
        self._validate_prompt(prompt_token_ids, params)
        vision = self.model_config.vision
        audio = self.model_config.audio
        items = (check_audio_inputs(audio, prompt_token_ids, request.mm_inputs) if audio
                 else check_mm_inputs(vision, prompt_token_ids, request.mm_inputs))
        mrope, delta = place(vision, len(prompt_token_ids), items) if vision else (None, 0)
        state = RequestState(request_id, params, len(prompt_token_ids))
        if params.structured is not None:
            state.compiled_grammar = self.requests.compile_grammar(params.structured)
        max_total = self.max_model_len
        # In thinking mode max_tokens bounds the answer, not the reasoning (the stepper
        # counts answer tokens); otherwise it bounds every output token.
        if params.max_tokens is not None and not params.starts_in_thinking:
            max_total = min(max_total, len(prompt_token_ids) + params.max_tokens)
        seq = Sequence(
            seq_id=self.requests.next_seq_id(), request_id=request_id, index=0,
            token_ids=list(prompt_token_ids), num_prompt_tokens=len(prompt_token_ids),
            params=params, max_total_tokens=max_total, arrival_time=time.monotonic(),
            pending_forks=params.n - 1, in_thinking=params.starts_in_thinking,
            mm_inputs=items, mrope_positions=mrope, mrope_delta=delta,
        )
        self.requests.add(state, seq)
        self.scheduler.add(seq)

    def _validate_prompt(self, prompt: list[int], params: SamplingParams) -> None:
        if not prompt:
            raise InvalidRequest("the prompt is empty", param="input")
        vocab = self.model_config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise InvalidRequest(f"prompt token ids must be in [0, {vocab})", param="input")
        if len(prompt) >= self.max_model_len:
            raise PromptTooLong(
                f"Range of input length should be [1, {self.max_model_len - 1}]; "
                f"the prompt has {len(prompt)} tokens",
                param="input",
            )
        if params.max_tokens is not None and len(prompt) + params.max_tokens > self.max_model_len:
            raise PromptTooLong(
                f"max_tokens {params.max_tokens} plus the prompt's {len(prompt)} tokens exceeds "
                f"the model's context of {self.max_model_len} tokens",
                param="max_tokens",
            )

    def abort(self, request_id: str) -> list[EngineEvent]:
        """Finish every sample of the request now and free its KV blocks."""
        state = self.requests.get(request_id)
        if state is None:
            return []
        for sample in state.samples.values():  # samples never forked count as finished
            state.num_finished += sample.seq.pending_forks
            sample.seq.pending_forks = 0
        events = []
        for sample in list(state.samples.values()):
            if not sample.seq.is_finished:
                events.append(self.post.finish(state, sample, SequenceStatus.FINISHED_ABORTED))
        return events

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    # ----- stepping -------------------------------------------------------------------------

    def step(self) -> list[EngineEvent]:
        """Schedule, run the model, settle the step in the scheduler, then sample."""
        out = self.scheduler.schedule(time.monotonic())
        if out.is_empty:
            return []
        logits = self.runner.execute(out.decodes, out.prefills)
        sampling = self.scheduler.update_from_output(out, time.monotonic())
        return self.post.process(sampling, logits)

    def stats(self) -> EngineStats:
        return EngineStats(
            num_waiting=len(self.scheduler.waiting),
            num_running=len(self.scheduler.running),
            num_kv_blocks_total=self.block_manager.num_blocks,
            num_kv_blocks_free=self.block_manager.num_free_blocks,
            num_preemptions=self.scheduler.num_preemptions,
            num_prefix_cache_hits=self.block_manager.num_cached_tokens_served,
            num_kv_blocks_pinned=len(self.block_manager.pins),
        )

