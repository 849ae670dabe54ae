"""Qwen3-VL's vision encoder: a ViT with LayerNorm and GELU, a learned position table resized
to each image's grid plus 2-D rotary embedding, full attention per image, a 2x2 patch merger,
and DeepStack mergers whose outputs are added to the decoder's first layers. Module names
mirror the Hugging Face checkpoints (``visual.*``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

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
        self.linear_fc1 = nn.Linear(dim, inter, bias=True)
        self.linear_fc2 = nn.Linear(inter, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.linear_fc2(F.gelu(self.linear_fc1(x), approximate="tanh"))
        return result


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.attn = VisionAttention(cfg.hidden_size, cfg.num_heads)
        self.mlp = VisionMLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(
        self, x: torch.Tensor, bounds: Sequence[int], rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bounds, rope)
        result: torch.Tensor = x + self.mlp(self.norm2(x))
        return result


class PatchMerger(nn.Module):
    """LayerNorm per patch (main merger) or per merged group (DeepStack), then a GELU MLP."""

    def __init__(self, cfg: VisionConfig, postshuffle_norm: bool) -> None:
        super().__init__()
        self.merged = cfg.hidden_size * cfg.spatial_merge_size**2
        self.postshuffle_norm = postshuffle_norm
        self.norm = nn.LayerNorm(self.merged if postshuffle_norm else cfg.hidden_size, eps=1e-6)
        self.linear_fc1 = nn.Linear(self.merged, self.merged)
        self.linear_fc2 = nn.Linear(self.merged, cfg.out_hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.view(-1, self.merged) if self.postshuffle_norm else x).view(-1, self.merged)
        result: torch.Tensor = self.linear_fc2(F.gelu(self.linear_fc1(x)))
        return result


class Qwen3VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = VisionPatchEmbed(
            cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.hidden_size, bias=True
        )
        self.pos_embed = nn.Embedding(cfg.num_position_embeddings, cfg.hidden_size)
        self.side = int(cfg.num_position_embeddings**0.5)
        self.rotary_pos_emb = VisionRotary(cfg.hidden_size // cfg.num_heads)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg, postshuffle_norm=False)
        self.deepstack_merger_list = nn.ModuleList(
            PatchMerger(cfg, postshuffle_norm=True) for _ in cfg.deepstack_visual_indexes
        )

    def _position_table(self, grids: Sequence[Grid]) -> torch.Tensor:
        """The learned table resized (bilinear, corners aligned) to each grid, in patch order."""
        m = self.cfg.spatial_merge_size
        table = self.pos_embed.weight.view(self.side, self.side, -1).permute(2, 0, 1)[None]
        out = []
        for t, h, w in grids:
            grid = F.interpolate(table.float(), size=(h, w), mode="bilinear", align_corners=True)
            grid = grid[0].permute(1, 2, 0)  # [h, w, C]
            grid = grid.reshape(h // m, m, w // m, m, -1).transpose(1, 2).reshape(h * w, -1)
            out.append(grid.repeat(t, 1))
        return torch.cat(out)

    def forward(
        self, pixels: torch.Tensor, grids: Sequence[Grid]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Merged rows [sum(t*h*w) / merge**2, out_hidden] and one DeepStack tensor of the
        same shape per DeepStack layer."""
        x = self.patch_embed(pixels)
        x = x + self._position_table(grids).to(x.dtype)
        cos, sin = self.rotary_pos_emb(position_ids(grids, self.cfg.spatial_merge_size))
        rope = (cos.to(x.device), sin.to(x.device))
        bounds = cu_seqlens(grids)
        deepstack: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x, bounds, rope)
            if i in self.cfg.deepstack_visual_indexes:
                merger = self.deepstack_merger_list[self.cfg.deepstack_visual_indexes.index(i)]
                deepstack.append(merger(x))
        return self.merger(x), deepstack
