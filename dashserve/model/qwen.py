"""Qwen2 / Qwen2.5 / Qwen3 / Qwen3-MoE decoder, with module names mirroring the HF checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dashserve.model.attention import AttentionMetadata, paged_attention
from dashserve.model.config import ModelConfig
from dashserve.model.layers import MLP, RMSNorm, RotaryEmbedding, SparseMoeBlock, fuse_linears


@dataclass(frozen=True, slots=True)
class DeepStack:
    """Qwen3-VL: ``embeds[i]`` ([len(rows), hidden]) is added to the hidden states at ``rows``
    (the visual tokens of the batch) after decoder layer ``i``."""

    rows: torch.Tensor
    embeds: list[torch.Tensor]


class QwenAttention(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        hidden, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)
        self.qk_norm = config.qk_norm
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.rotary = rotary
        self.eps = config.rms_norm_eps
        self.kernels: Any = None  # set by use_native_ops: fused q/k norm + rotary for bf16 on CPU
        self.qkv_proj: nn.Module | None = None
        self.qkv_sizes = [self.num_heads * self.head_dim] + [self.num_kv_heads * self.head_dim] * 2

    def fuse_projections(self) -> None:
        """Compute q, k and v as one linear layer from now on (after the weights are loaded)."""
        self.qkv_proj = fuse_linears([self.q_proj, self.k_proj, self.v_proj])
        del self.q_proj, self.k_proj, self.v_proj

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        t = x.shape[0]
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).split(self.qkv_sizes, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.reshape(t, self.num_heads, self.head_dim)
        k = k.reshape(t, self.num_kv_heads, self.head_dim)
        v = v.reshape(t, self.num_kv_heads, self.head_dim)
        if (self.kernels is not None and q.dtype == torch.bfloat16 and not q.is_cuda
                and positions.dim() == 1):
            q, k = q.contiguous(), k.contiguous()
            self.kernels.qk_norm_rope(
                q, k, self.q_norm.weight if self.qk_norm else None,
                self.k_norm.weight if self.qk_norm else None,
                self.rotary.cos, self.rotary.sin, positions, self.eps,
            )
        else:
            if self.qk_norm:
                q, k = self.q_norm(q), self.k_norm(k)
            q, k = self.rotary(positions, q, k)
        out = paged_attention(q, k, v, kv_cache[0], kv_cache[1], meta, self.scale)
        result: torch.Tensor = self.o_proj(out.reshape(t, self.num_heads * self.head_dim))
        return result


class QwenDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = QwenAttention(config, rotary)
        self.mlp: nn.Module
        if config.is_moe_layer(layer_idx):
            self.mlp = SparseMoeBlock(
                config.hidden_size, config.moe_intermediate_size, config.num_experts,
                config.num_experts_per_tok, config.norm_topk_prob,
            )
        else:
            self.mlp = MLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), positions, kv_cache, meta)
        result: torch.Tensor = x + self.mlp(self.post_attention_layernorm(x))
        return result


class QwenModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        rotary = RotaryEmbedding(
            config.head_dim, config.max_position_embeddings, config.rope_theta,
            config.mrope_section, config.mrope_interleaved,
        )
        self.rotary_emb = rotary
        self.layers = nn.ModuleList(
            QwenDecoderLayer(config, i, rotary) for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]], meta: AttentionMetadata,
        inputs_embeds: torch.Tensor | None = None, deepstack: DeepStack | None = None,
    ) -> torch.Tensor:
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        for i, (layer, kv_cache) in enumerate(zip(self.layers, kv_caches, strict=True)):
            x = layer(x, positions, kv_cache, meta)
            if deepstack is not None and i < len(deepstack.embeds):
                x = x.index_add(0, deepstack.rows, deepstack.embeds[i].to(x.dtype))
        result: torch.Tensor = self.norm(x)
        return result


class QwenForCausalLM(nn.Module):
    """The whole model: ``forward`` returns hidden states, ``compute_logits`` the chosen rows."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = QwenModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]], meta: AttentionMetadata,
        inputs_embeds: torch.Tensor | None = None, deepstack: DeepStack | None = None,
    ) -> torch.Tensor:
        result: torch.Tensor = self.model(input_ids, positions, kv_caches, meta, inputs_embeds,
                                          deepstack)
        return result

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.lm_head(hidden)
        return result

    def fuse_projections(self) -> None:
        """Merge q/k/v and gate/up into single linear layers (fewer, longer weight streams per
        step; for the CPU fast path, after loading)."""
        for module in list(self.modules()):
            if isinstance(module, (QwenAttention, MLP)):
                module.fuse_projections()
