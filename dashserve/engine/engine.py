"""LLMEngine: add requests, run steps (schedule → forward → sample → stop), emit EngineEvents."""

from __future__ import annotations

import importlib.util
import itertools
import logging
import time
from collections import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dashserve.engine.audio_requests import check_audio_inputs
from dashserve.engine.block_manager import BlockManager, blocks_for
from dashserve.engine.detokenize import IncrementalDetokenizer
from dashserve.engine.mm_requests import check_mm_inputs, place
from dashserve.engine.outputs import EngineEvent, EngineStats
from dashserve.engine.params import (
    InvalidParameter,
    PromptTooLong,
    SamplingParams,
    StructuredOutputSpec,
)
from dashserve.engine.request_state import RequestState, SampleState, sample_seed
from dashserve.engine.runner import CacheConfig, ModelRunner
from dashserve.engine.scheduler import ScheduledChunk, Scheduler, SchedulerConfig
from dashserve.engine.sequence import Sequence, SequenceStatus
from dashserve.engine.stepper import StepPostprocessor
from dashserve.model.config import ModelConfig
from dashserve.model.cpu_kernels import all_built
from dashserve.model.cpu_linear import (
    attach_native_kernels,
    pack_linears,
    packing_available,
    use_native_ops,
)
from dashserve.model.kernel_build import can_build
from dashserve.model.loader import load_model, pick_dtype, resolve_model_dir
from dashserve.multimodal.inputs import MultiModalInput
from dashserve.sampling.sampler import make_generator
from dashserve.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Validated once; derived values (KV blocks, context length) live on the engine."""

    model: str
    dtype: str = "auto"
    device: str = "auto"
    max_model_len: int | None = None
    kv_cache_gb: float | None = None  # None: 4 GiB on CPU, most free memory on GPU
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    enable_prefix_caching: bool = True
    pack_weights: bool = True  # CPU bf16: faster decode layers (native kernels or packed oneDNN)
    encoder_cache_tokens: int = 16384  # vision models: encoder output rows kept for reuse
    # CPU native kernels not built yet: "wait" builds them first; "background" starts on the
    # torch path (``kernels_pending``) and switches in ``attach_kernels`` once they are built
    kernels: str = "wait"


class LLMEngine:
    """The synchronous engine. Not thread-safe: one thread calls add/abort/step."""

    def __init__(self, config: EngineConfig,
                 progress: Callable[[int, int], None] | None = None) -> None:
        """``progress(done, total)`` follows the weights as they load."""
        self.config = config
        self.model_dir = resolve_model_dir(config.model)
        self.model_config = ModelConfig.from_dir(self.model_dir)
        self.tokenizer = Tokenizer.from_dir(self.model_dir)
        device = _pick_device(config.device)
        wait = config.kernels != "background"
        dtype = pick_dtype(config.dtype, device, wait)
        model = load_model(self.model_dir, self.model_config, dtype, device, progress)
        self.weight_bytes = sum(  # bytes one decode step reads (tied weights once)
            p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values()
        )
        if config.pack_weights and packing_available(dtype, device):
            model.fuse_projections()
            pack_linears(model, wait=wait)
            use_native_ops(model, wait=wait)
        num_blocks, self.max_model_len = _size_cache(config, self.model_config, dtype, device)
        self.runner = ModelRunner(
            model, CacheConfig(config.block_size, num_blocks), device,
            encoder_cache_tokens=config.encoder_cache_tokens, wait_for_kernels=wait,
        )
        # native kernels that a background build will bring (see attach_kernels)
        self.kernels_pending = device.type == "cpu" and not wait and not all_built() \
            and can_build()
        self.block_manager = BlockManager(
            num_blocks, config.block_size, config.enable_prefix_caching
        )
        self.scheduler = Scheduler(
            SchedulerConfig(config.max_num_seqs, config.max_num_batched_tokens),
            self.block_manager,
        )
        self.requests: dict[str, RequestState] = {}
        self._seq_ids = itertools.count()
        self.eos_token_ids = frozenset(
            [*self.model_config.eos_token_ids, *self.tokenizer.stop_token_ids]
        )
        self.grammar_compiler: Any | None = None  # set lazily on first constrained request
        self.post = StepPostprocessor(self)
        log.info("engine ready: %s, max_model_len %d", self.model_dir, self.max_model_len)

    def attach_kernels(self) -> int:
        """Switch to native kernels built since start-up; only between steps (the engine's
        own thread). Returns how many modules switched."""
        count = self.runner.attach_kernels()
        if self.config.pack_weights:
            count += attach_native_kernels(self.runner.model)
        self.kernels_pending = False
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
            self.add_request(request_id, prompt, params)
            while request_id in self.requests:
                self.step()
        return time.monotonic() - started

    # ----- requests -------------------------------------------------------------------------

    def add_request(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
        mm_inputs: abc.Sequence[MultiModalInput] = (),
    ) -> None:
        """Validate and queue a request; raises InvalidParameter before scheduling anything."""
        if request_id in self.requests:
            raise InvalidParameter("request_id", f"request {request_id!r} is already running")
        self._validate_prompt(prompt_token_ids, params)
        vision = self.model_config.vision
        audio = self.model_config.audio
        items = (check_audio_inputs(audio, prompt_token_ids, mm_inputs) if audio
                 else check_mm_inputs(vision, prompt_token_ids, mm_inputs))
        mrope, delta = place(vision, len(prompt_token_ids), items) if vision else (None, 0)
        state = RequestState(request_id, params, len(prompt_token_ids))
        if params.structured is not None:
            state.compiled_grammar = self._compile_grammar(params.structured)
        max_total = self.max_model_len
        # In thinking mode max_tokens bounds the answer, not the reasoning (the stepper
        # counts answer tokens); otherwise it bounds every output token.
        if params.max_tokens is not None and not params.starts_in_thinking:
            max_total = min(max_total, len(prompt_token_ids) + params.max_tokens)
        seq = Sequence(
            seq_id=next(self._seq_ids), request_id=request_id, index=0,
            token_ids=list(prompt_token_ids), num_prompt_tokens=len(prompt_token_ids),
            params=params, max_total_tokens=max_total, arrival_time=time.monotonic(),
            pending_forks=params.n - 1, in_thinking=params.starts_in_thinking,
            mm_inputs=items, mrope_positions=mrope, mrope_delta=delta,
        )
        state.samples[0] = self._new_sample(state, seq)
        self.requests[request_id] = state
        self.scheduler.add(seq)

    def _validate_prompt(self, prompt: list[int], params: SamplingParams) -> None:
        if not prompt:
            raise InvalidParameter("input", "the prompt is empty")
        vocab = self.model_config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise InvalidParameter("input", f"prompt token ids must be in [0, {vocab})")
        if len(prompt) >= self.max_model_len:
            raise PromptTooLong(
                "input",
                f"Range of input length should be [1, {self.max_model_len - 1}]; "
                f"the prompt has {len(prompt)} tokens",
            )
        if params.max_tokens is not None and len(prompt) + params.max_tokens > self.max_model_len:
            raise PromptTooLong(
                "max_tokens",
                f"max_tokens {params.max_tokens} plus the prompt's {len(prompt)} tokens exceeds "
                f"the model's context of {self.max_model_len} tokens",
            )

    def _compile_grammar(self, spec: StructuredOutputSpec) -> Any:
        if self.grammar_compiler is None:
            from dashserve.sampling.structured import GrammarCompiler

            self.grammar_compiler = GrammarCompiler(self.tokenizer, self.model_config.vocab_size)
        return self.grammar_compiler.compile(spec)

    def _new_sample(self, state: RequestState, seq: Sequence) -> SampleState:
        p = state.params
        skip = self.tokenizer.special_ids if p.skip_special_tokens else frozenset()
        detok = IncrementalDetokenizer(self.tokenizer.id_to_bytes, skip, p.stop)
        matcher = None
        if state.compiled_grammar is not None:
            assert self.grammar_compiler is not None
            matcher = self.grammar_compiler.matcher(state.compiled_grammar)
        gen = make_generator(sample_seed(p.seed, seq.index))
        return SampleState(seq, detok, gen, matcher)

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
        if self.block_manager.pins:
            self.block_manager.expire_pins(time.monotonic())
        out = self.scheduler.schedule()
        if out.is_empty:
            return []
        logits = self.runner.execute(out.decodes, out.prefills)
        sampling: list[ScheduledChunk] = []
        for chunk in out.chunks:
            if chunk.samples:
                sampling.append(chunk)
            chunk.seq.num_computed_tokens += chunk.num_tokens
            self.block_manager.register_full_blocks(chunk.seq)
            if chunk.seq.params.pin_prefix_tokens and chunk.seq.num_pin_created_tokens is None:
                self._pin_prefix(chunk.seq)
        return self.post.process(sampling, logits)

    def _pin_prefix(self, seq: Sequence) -> None:
        """Pin the explicit-cache prefix once all of it (or the whole prompt) is computed."""
        want = min(seq.params.pin_prefix_tokens, seq.num_prompt_tokens)
        if seq.num_computed_tokens >= want:
            seq.num_pin_created_tokens = self.block_manager.pin_prefix(
                seq, want, seq.params.pin_ttl_s, time.monotonic()
            )

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


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _size_cache(
    config: EngineConfig, model: ModelConfig, dtype: torch.dtype, device: torch.device
) -> tuple[int, int]:
    """Number of KV blocks from the memory budget, and the context length that fits."""
    max_len = min(config.max_model_len or model.max_position_embeddings,
                  model.max_position_embeddings)
    per_token = model.kv_bytes_per_token // 2 * dtype.itemsize
    if config.kv_cache_gb is not None:
        budget = config.kv_cache_gb * 2**30
    elif device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free * 0.85
    else:
        budget = 4 * 2**30
    bs = config.block_size
    num_blocks = int(budget // (per_token * bs))
    useful = blocks_for(max_len, bs) * config.max_num_seqs + 1
    num_blocks = min(num_blocks, useful)
    if num_blocks * bs < max_len:
        log.warning("KV cache holds %d tokens; context limited to that", num_blocks * bs)
        max_len = num_blocks * bs
    if num_blocks < 2:
        raise ValueError("the KV cache budget is too small for even two blocks")
    return num_blocks, max_len

