"""ModelRunner: loads the model and owns it and its paged KV cache; turns a scheduled step
into logits."""

from __future__ import annotations

import logging
import math
import mmap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from dashserve.engine.block_manager import blocks_for
from dashserve.engine.config import EngineConfig
from dashserve.engine.scheduler import ScheduledChunk
from dashserve.engine.vision_step import MediaSpan, VisionStep, rope_positions
from dashserve.model.attention import AttentionMetadata, PrefillSegment
from dashserve.model.config import ModelConfig
from dashserve.model.cpu_kernels import all_built, paged_decode_module
from dashserve.model.cpu_linear import (
    attach_native_kernels,
    pack_linears,
    packing_available,
    use_native_ops,
)
from dashserve.model.kernel_build import can_build
from dashserve.model.loader import load_model, pick_dtype, resolve_model_dir
from dashserve.model.qwen import QwenForCausalLM
from dashserve.model.qwen_audio import QwenAudioForConditionalGeneration
from dashserve.model.qwen_vl import QwenVLForConditionalGeneration

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The KV cache as sized at load: blocks of ``block_size`` tokens, and the context
    length that fits (the model's, or less when the cache is smaller)."""

    block_size: int
    num_blocks: int
    max_model_len: int


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed tensor; on CPU backed by fresh anonymous memory, which the OS zeroes page by
    page on first touch, so a cache of several GiB costs nothing at start-up."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    numel = math.prod(shape)
    if numel == 0:
        return torch.zeros(shape, dtype=dtype)
    memory = mmap.mmap(-1, numel * dtype.itemsize)
    return torch.frombuffer(memory, dtype=dtype, count=numel).view(shape)


class ModelRunner:
    """Implements the engine's ``StepRunner``: one forward pass per step over the paged cache.

    ``load`` builds one from an ``EngineConfig`` (weights, dtype, packing, cache size);
    ``weight_bytes`` is what one decode step reads, ``kernels_pending`` says native CPU
    kernels are still to come from a background build (see ``attach_kernels``).
    """

    def __init__(
        self, model: QwenForCausalLM, cache: CacheConfig, device: torch.device, *,
        model_dir: Path | None = None, weight_bytes: int = 0, encoder_cache_tokens: int = 16384,
        wait_for_kernels: bool = True, pack_weights: bool = False,
    ) -> None:
        self.model = model
        self.model_config: ModelConfig = model.config
        self.model_dir = model_dir or Path(".")
        self.weight_bytes = weight_bytes
        self.pack_weights = pack_weights
        self.vision = (VisionStep(model, encoder_cache_tokens)
                       if isinstance(model, (QwenVLForConditionalGeneration,
                                             QwenAudioForConditionalGeneration)) else None)
        self.decode_kernel = None
        self._native = device.type == "cpu"
        self.kernels_pending = self._native and not wait_for_kernels and not all_built() \
            and can_build()
        if self._native:
            native = paged_decode_module(wait_for_kernels)
            self.decode_kernel = native.paged_decode if native is not None else None
        self.cache = cache
        self.device = device
        cfg = model.config
        dtype = model.model.embed_tokens.weight.dtype
        num_slots = cache.num_blocks * cache.block_size
        shape = (cfg.num_key_value_heads, num_slots, cfg.head_dim)
        self.kv_caches = [(_zeros(shape, dtype, device), _zeros(shape, dtype, device))
                          for _ in range(cfg.num_hidden_layers)]
        bs = cache.block_size
        self._offsets = torch.arange(bs, device=device)
        log.info(
            "KV cache: %d blocks x %d tokens = %d tokens, %.2f GiB",
            cache.num_blocks, bs, num_slots,
            2 * len(self.kv_caches) * num_slots * shape[0] * shape[2] * dtype.itemsize / 2**30,
        )

    @classmethod
    def load(cls, config: EngineConfig,
             progress: Callable[[int, int], None] | None = None) -> ModelRunner:
        """Load the checkpoint ``config.model`` names: pick device and dtype, load the weights
        (``progress(done, total)`` follows them), pack them for the CPU kernels when asked,
        and size the KV cache from the memory budget."""
        model_dir = resolve_model_dir(config.model)
        model_config = ModelConfig.from_dir(model_dir)
        device = _pick_device(config.device)
        wait = config.kernels != "background"
        dtype = pick_dtype(config.dtype, device, wait)
        model = load_model(model_dir, model_config, dtype, device, progress)
        weight_bytes = sum(  # bytes one decode step reads (tied weights once)
            p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values()
        )
        if config.pack_weights and packing_available(dtype, device):
            model.fuse_projections()
            pack_linears(model, wait=wait)
            use_native_ops(model, wait=wait)
        cache = _size_cache(config, model_config, dtype, device)
        return cls(model, cache, device, model_dir=model_dir, weight_bytes=weight_bytes,
                   encoder_cache_tokens=config.encoder_cache_tokens, wait_for_kernels=wait,
                   pack_weights=config.pack_weights)

    def attach_kernels(self) -> int:
        """Switch to native kernels built since start-up (between steps only); returns how
        many modules switched."""
        count = self._attach_decode_kernel()
        if self.pack_weights:
            count += attach_native_kernels(self.model)
        self.kernels_pending = False
        return count

    def _attach_decode_kernel(self) -> int:
        """Take the paged decode kernel if it was built since."""
        if not self._native or self.decode_kernel is not None:
            return 0
        native = paged_decode_module(wait=False)
        if native is None:
            return 0
        self.decode_kernel = native.paged_decode
        return 1

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy whole KV blocks src -> dst in every layer (copy-on-write for forked samples)."""
        bs = self.cache.block_size
        for src, dst in pairs:
            for k, v in self.kv_caches:
                k[:, dst * bs:(dst + 1) * bs] = k[:, src * bs:(src + 1) * bs]
                v[:, dst * bs:(dst + 1) * bs] = v[:, src * bs:(src + 1) * bs]

    def _slots(self, block_table: list[int], start: int, end: int) -> torch.Tensor:
        bt = torch.tensor(block_table, dtype=torch.long, device=self.device)
        return (bt.unsqueeze(1) * self.cache.block_size + self._offsets).view(-1)[start:end]

    def _decode_context(
        self, decodes: list[ScheduledChunk]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bs = self.cache.block_size
        lengths = [c.seq.num_tokens for c in decodes]
        max_blocks = max(len(c.seq.block_table) for c in decodes)
        table = torch.tensor(
            [c.seq.block_table + [0] * (max_blocks - len(c.seq.block_table)) for c in decodes],
            dtype=torch.long, device=self.device,
        )
        max_len = max(lengths)
        slots = (table.unsqueeze(2) * bs + self._offsets).view(len(decodes), -1)[:, :max_len]
        lens = torch.tensor(lengths, dtype=torch.long, device=self.device).unsqueeze(1)
        valid = torch.arange(max_len, device=self.device).unsqueeze(0) < lens
        mask = torch.zeros(valid.shape, dtype=torch.float32, device=self.device)
        mask.masked_fill_(~valid, float("-inf"))
        return slots.contiguous(), mask.view(1, len(decodes), 1, max_len), lens.view(-1)

    def prepare(
        self, decodes: list[ScheduledChunk], prefills: list[ScheduledChunk]
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int], list[MediaSpan]]:
        """Flatten the step into input ids, rotary positions, attention metadata, the rows
        whose hidden states produce logits (one per sampling chunk, in chunk order) and the
        prefill chunks of prompts with images.

        Positions are token indices, shifted by ``mrope_delta`` after an image; [3, T] M-RoPE
        positions only when a chunk covers image tokens (text tokens have t = h = w)."""
        ids: list[int] = []
        positions: list[int] = []
        slot_parts: list[torch.Tensor] = []
        sample_rows: list[int] = []
        segments: list[PrefillSegment] = []
        spans: list[MediaSpan] = []
        vl = any(c.seq.mrope_positions is not None for c in decodes + prefills)
        ropes: list[torch.Tensor] = []
        decode_slots = decode_mask = decode_lens = None
        if decodes:
            decode_slots, decode_mask, decode_lens = self._decode_context(decodes)
            for c in decodes:
                ids.append(c.seq.token_ids[-1])
                positions.append(c.seq.num_tokens - 1)
            slot_parts.append(decode_slots[torch.arange(len(decodes)),
                                           torch.tensor(positions, device=self.device)])
            sample_rows.extend(range(len(decodes)))
            if vl:
                shifted = [p + c.seq.mrope_delta for p, c in zip(positions, decodes, strict=True)]
                ropes.append(torch.tensor(shifted).expand(3, -1))
        for c in prefills:
            start = c.seq.num_computed_tokens
            end = start + c.num_tokens
            context = self._slots(c.seq.block_table, 0, end)
            segments.append(PrefillSegment(len(ids), c.num_tokens, context))
            if c.seq.mm_inputs:
                spans.append(MediaSpan(len(ids), c.seq, start, end))
            if vl:
                ropes.append(rope_positions(c.seq, start, end))
            ids.extend(c.seq.token_ids[start:end])
            positions.extend(range(start, end))
            slot_parts.append(context[start:end])
            if c.samples:
                sample_rows.append(len(ids) - 1)
        meta = AttentionMetadata(
            slot_mapping=torch.cat(slot_parts), num_decode=len(decodes),
            decode_slots=decode_slots, decode_mask=decode_mask, prefills=segments,
            decode_lens=decode_lens, decode_kernel=self.decode_kernel,
        )

        def as_tensor(xs: list[int]) -> torch.Tensor:
            return torch.tensor(xs, dtype=torch.long, device=self.device)

        if not vl:
            return as_tensor(ids), as_tensor(positions), meta, sample_rows, spans
        rope = torch.cat(ropes, dim=1)
        if torch.equal(rope[0], rope[1]) and torch.equal(rope[0], rope[2]):
            rope = rope[0]  # no image token in the step: the 1-D rotary kernels apply
        return as_tensor(ids), rope.contiguous().to(self.device), meta, sample_rows, spans

    @torch.inference_mode()
    def execute(
        self, decodes: list[ScheduledChunk], prefills: list[ScheduledChunk]
    ) -> torch.Tensor:
        """Run one forward pass; returns float32 logits [num_sampling_chunks, vocab]."""
        input_ids, positions, meta, rows, spans = self.prepare(decodes, prefills)
        embeds = deepstack = None
        if self.vision is not None and spans:
            embeds, deepstack = self.vision.inputs(input_ids, spans)
        hidden = self.model(input_ids, positions, self.kv_caches, meta, embeds, deepstack)
        if not rows:
            return torch.empty(0, self.model.config.vocab_size)
        logits = self.model.compute_logits(hidden[torch.tensor(rows, device=self.device)])
        return logits.float().cpu()


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _size_cache(
    config: EngineConfig, model: ModelConfig, dtype: torch.dtype, device: torch.device
) -> CacheConfig:
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
    return CacheConfig(bs, num_blocks, max_len)
