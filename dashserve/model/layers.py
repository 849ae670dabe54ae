"""Building blocks of Qwen decoders: RMSNorm, rotary embedding, SwiGLU MLP, sparse MoE block."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dashserve.model.mrope import mrope_cos_sin


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, as the reference implementation does.

    ``kernels`` (set by ``use_native_ops``) computes the same in one pass for bf16 on CPU.
    """

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        self.kernels: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernels is not None and x.dtype == torch.bfloat16 and not x.is_cuda:
            normed: torch.Tensor = self.kernels.rms_norm(x, self.weight, self.eps)
            return normed
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class RotaryEmbedding(nn.Module):
    """Neox-style rotary embedding with a precomputed cos/sin table indexed by position.

    With ``mrope_section`` (vision-language models) positions may also be [3, T] (M-RoPE).
    """

    cos: torch.Tensor  # [max_position, head_dim / 2] buffers
    sin: torch.Tensor

    def __init__(
        self, head_dim: int, max_position: int, base: float,
        mrope_section: tuple[int, ...] = (), mrope_interleaved: bool = False,
    ) -> None:
        super().__init__()
        self.mrope_section = mrope_section
        self.mrope_interleaved = mrope_interleaved
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        t = torch.arange(max_position, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def forward(
        self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q: [T, H, D], k: [T, KVH, D]; positions: [T], or [3, T] with M-RoPE."""
        if positions.dim() == 2:
            cos, sin = mrope_cos_sin(self.cos, self.sin, positions, self.mrope_section,
                                     self.mrope_interleaved)
            return _rotate(q, cos.unsqueeze(1), sin.unsqueeze(1)), _rotate(
                k, cos.unsqueeze(1), sin.unsqueeze(1))
        cos = self.cos[positions].unsqueeze(1)
        sin = self.sin[positions].unsqueeze(1)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(x.dtype)


def fuse_linears(layers: list[nn.Linear]) -> nn.Linear:
    """One linear layer computing ``layers`` side by side, their outputs concatenated: one
    weight stream and one call where there were several."""
    first = layers[0]
    fused = nn.Linear(first.in_features, sum(layer.out_features for layer in layers),
                      bias=first.bias is not None, device="meta")
    fused.weight = nn.Parameter(torch.cat([layer.weight.detach() for layer in layers]),
                                requires_grad=False)
    if first.bias is not None:
        fused.bias = nn.Parameter(torch.cat([layer.bias.detach() for layer in layers]),
                                  requires_grad=False)
    return fused


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.gate_up_proj: nn.Module | None = None

    def fuse_projections(self) -> None:
        """Compute gate and up as one linear layer from now on (after the weights are loaded)."""
        self.gate_up_proj = fuse_linears([self.gate_proj, self.up_proj])
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        result: torch.Tensor = self.down_proj(F.silu(gate) * up)
        return result


class SparseMoeBlock(nn.Module):
    """Qwen3-MoE block: softmax router, top-k experts per token, optional renormalisation."""

    def __init__(
        self, hidden_size: int, moe_intermediate_size: int, num_experts: int, top_k: int,
        norm_topk_prob: bool,
    ) -> None:
        super().__init__()
        self.top_k = top_k
        self.norm_topk_prob = norm_topk_prob
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)
        self.experts = nn.ModuleList(
            MLP(hidden_size, moe_intermediate_size) for _ in range(num_experts)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        router_logits = self.gate(x)
        weights = F.softmax(router_logits, dim=-1, dtype=torch.float32)
        weights, selected = torch.topk(weights, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(x.dtype)
        out = torch.zeros_like(x)
        for expert_idx in torch.unique(selected).tolist():
            token_idx, slot = torch.where(selected == expert_idx)
            expert_out = self.experts[expert_idx](x[token_idx])
            out.index_add_(0, token_idx, expert_out * weights[token_idx, slot].unsqueeze(-1))
        return out
