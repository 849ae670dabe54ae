"""Qwen2.5-VL's vision encoder: a ViT with RMSNorm, SwiGLU and window attention (full
attention in a few blocks), and a 2x2 patch merger into the decoder's width. Module names
mirror the Hugging Face checkpoints (``visual.*``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dashserve.model.layers import RMSNorm
from dashserve.model.vision_config import VisionConfig
from dashserve.model.vision_layers import (
    Grid,
    VisionAttention,
    VisionPatchEmbed,
    VisionRotary,
    cu_seqlens,
    position_ids,
)


class VisionMLP(nn.Module):
    def __init__(self, dim: int, inter: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, inter, bias=True)
        self.up_proj = nn.Linear(dim, inter, bias=True)
        self.down_proj = nn.Linear(inter, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return result


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, 1e-6)
        self.norm2 = RMSNorm(cfg.hidden_size, 1e-6)
        self.attn = VisionAttention(cfg.hidden_size, cfg.num_heads)
        self.mlp = VisionMLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(
        self, x: torch.Tensor, bounds: Sequence[int], rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bounds, rope)
        result: torch.Tensor = x + self.mlp(self.norm2(x))
        return result


class PatchMerger(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.merged = cfg.hidden_size * cfg.spatial_merge_size**2
        self.ln_q = RMSNorm(cfg.hidden_size, 1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(self.merged, self.merged), nn.GELU(),
            nn.Linear(self.merged, cfg.out_hidden_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.mlp(self.ln_q(x).view(-1, self.merged))
        return result


def window_index(grids: Sequence[Grid], cfg: VisionConfig) -> tuple[torch.Tensor, list[int]]:
    """The order of merged tokens that puts each attention window's tokens together, and the
    window boundaries in patches."""
    merge = cfg.spatial_merge_size
    side = cfg.window_size // merge // cfg.patch_size  # window side in merged tokens
    unit = merge * merge
    order: list[torch.Tensor] = []
    bounds = [0]
    base = 0
    for t, h, w in grids:
        gh, gw = h // merge, w // merge
        index = torch.arange(t * gh * gw).reshape(t, gh, gw)
        pad_h, pad_w = side - gh % side, side - gw % side
        nh, nw = (gh + pad_h) // side, (gw + pad_w) // side
        padded = F.pad(index, (0, pad_w, 0, pad_h), "constant", -100)
        padded = padded.reshape(t, nh, side, nw, side).permute(0, 1, 3, 2, 4)
        padded = padded.reshape(t, nh * nw, -1)
        sizes = (padded != -100).sum(-1).reshape(-1)
        flat = padded.reshape(-1)
        order.append(flat[flat != -100] + base)
        for size in sizes.tolist():
            if size:
                bounds.append(bounds[-1] + size * unit)
        base += t * gh * gw
    return torch.cat(order), bounds


class Qwen25VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = VisionPatchEmbed(
            cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.hidden_size, bias=False
        )
        self.rotary_pos_emb = VisionRotary(cfg.hidden_size // cfg.num_heads)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg)

    def forward(
        self, pixels: torch.Tensor, grids: Sequence[Grid]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Merged rows [sum(t*h*w) / merge**2, out_hidden] for the packed items (no DeepStack)."""
        unit = self.cfg.spatial_merge_size**2
        x = self.patch_embed(pixels)
        n = x.shape[0]
        order, window_bounds = window_index(grids, self.cfg)
        order = order.to(x.device)

        def permute(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n // unit, unit, -1)[order].reshape(n, -1)

        x = permute(x)
        cos, sin = self.rotary_pos_emb(position_ids(grids, self.cfg.spatial_merge_size))
        rope = (permute(cos.to(x.device)), permute(sin.to(x.device)))
        full_bounds = cu_seqlens(grids)
        for i, block in enumerate(self.blocks):
            bounds = full_bounds if i in self.cfg.fullatt_block_indexes else window_bounds
            x = block(x, bounds, rope)
        merged = self.merger(x)
        return merged[torch.argsort(order)], []
