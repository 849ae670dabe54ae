"""Pieces both Qwen VL vision encoders share: patch embedding, 2-D rotary positions in
merge-block order, and attention over packed variable-length images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Grid = tuple[int, int, int]


class VisionPatchEmbed(nn.Module):
    """A Conv3d over (channels, temporal patch, patch, patch) with stride = kernel: on the
    flattened patches the processors produce, one matrix product."""

    def __init__(self, in_channels: int, temporal: int, patch: int, dim: int, bias: bool) -> None:
        super().__init__()
        kernel = (temporal, patch, patch)
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=kernel, stride=kernel, bias=bias)
        self.dim = dim

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight.view(self.dim, -1)
        return F.linear(pixels.to(weight.dtype), weight, self.proj.bias)


def position_ids(grids: Sequence[Grid], merge: int) -> torch.Tensor:
    """(h, w) of every patch [N, 2], patches ordered by merge block (merge x merge neighbours
    together, as the processors emit them), frames repeated."""
    out = []
    for t, h, w in grids:
        hpos, wpos = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        hpos = hpos.reshape(shape).transpose(1, 2).flatten()
        wpos = wpos.reshape(shape).transpose(1, 2).flatten()
        out.append(torch.stack([hpos, wpos], dim=-1).repeat(t, 1))
    return torch.cat(out)


def cu_seqlens(grids: Sequence[Grid]) -> list[int]:
    """Boundaries of the attention segments: every frame of every item attends to itself."""
    bounds = [0]
    for t, h, w in grids:
        for _ in range(t):
            bounds.append(bounds[-1] + h * w)
    return bounds


class VisionRotary(nn.Module):
    """Axial 2-D rotary embedding: half the frequencies rotate by row, half by column."""

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.dim = head_dim // 2
        self.theta = theta  # no buffer: the frequencies stay float32 whatever the weights' dtype

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.arange(0, self.dim, 2, dtype=torch.float32) / self.dim
        inv_freq = 1.0 / (self.theta**steps)
        freqs = pos.to(torch.float32)[..., None] * inv_freq
        freqs = freqs.flatten(1)  # [N, head_dim / 2]: rows' then columns' angles
        return freqs.cos(), freqs.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Neox rotation in float32; x [N, H, D], cos/sin [N, D/2]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)


class VisionAttention(nn.Module):
    """Bidirectional attention within each segment of a packed batch of patches."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, bounds: Sequence[int], rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.num_heads, self.head_dim).unbind(1)
        q, k = rotate(q, *rope), rotate(k, *rope)
        out = torch.empty_like(q)
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            qs, ks, vs = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            out[start:end] = F.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1)
        result: torch.Tensor = self.proj(out.reshape(n, -1))
        return result
