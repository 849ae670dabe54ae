"""M-RoPE: the 3-D (temporal, height, width) rotary positions of Qwen VL prompts.

Text tokens get three equal positions, one more than the previous token's largest; the
tokens of an image or video get their (t, h, w) cell in the merged grid, offset by the
position where the item starts. Text after an item resumes one past the item's largest
position, so a prompt spans fewer positions than it has tokens: ``delta`` (negative or zero)
is the shift that carries into decoding, where position = token index + delta and all three
coordinates are equal, so decode runs the ordinary 1-D rotary embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class PlacedGrid(Protocol):
    """What M-RoPE needs of an image or video placed in a prompt (read-only)."""

    @property
    def grid_thw(self) -> tuple[int, int, int]: ...
    @property
    def offset(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def second_per_grid_t(self) -> float: ...


def mrope_positions(
    num_tokens: int, items: Sequence[PlacedGrid], spatial_merge_size: int,
    tokens_per_second: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """Positions [3, num_tokens] (long) of a prompt and its decode ``delta``.

    ``tokens_per_second`` > 0 (Qwen2.5-VL) spaces a video's temporal positions by
    ``second_per_grid_t * tokens_per_second``; images and Qwen3-VL use steps of one.
    """
    parts: list[torch.Tensor] = []
    index = 0
    next_pos = 0
    for item in sorted(items, key=lambda it: it.offset):
        if item.offset > index:
            n = item.offset - index
            parts.append(torch.arange(next_pos, next_pos + n).expand(3, n))
            next_pos += n
        t, h, w = item.grid_thw
        gh, gw = h // spatial_merge_size, w // spatial_merge_size
        step = item.second_per_grid_t * tokens_per_second if tokens_per_second else 1.0
        tpos = (torch.arange(t) * step).long()
        grid = torch.stack(torch.meshgrid(tpos, torch.arange(gh), torch.arange(gw), indexing="ij"))
        grid = grid.reshape(3, -1) + next_pos
        if grid.shape[1] != item.length:
            raise ValueError(
                f"an item at offset {item.offset} has {item.length} placeholder tokens, "
                f"its grid {item.grid_thw} needs {grid.shape[1]}"
            )
        parts.append(grid)
        next_pos = int(grid.max()) + 1
        index = item.offset + item.length
    if num_tokens > index:
        n = num_tokens - index
        parts.append(torch.arange(next_pos, next_pos + n).expand(3, n))
        next_pos += n
    positions = torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, dtype=torch.long)
    return positions, next_pos - num_tokens


def mrope_cos_sin(
    cos_table: torch.Tensor, sin_table: torch.Tensor, positions: torch.Tensor,
    section: Sequence[int], interleaved: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [T, head_dim / 2] for positions [3, T]: each rotary frequency takes its angle
    from one of the three coordinates. Qwen2.5-VL gives consecutive ``section`` runs of
    frequencies to t, h, w; Qwen3-VL (interleaved) cycles t, h, w over the first
    ``3 * section`` frequencies and gives the rest to t."""
    cos, sin = cos_table[positions], sin_table[positions]  # [3, T, D/2]
    if interleaved:
        out_cos, out_sin = cos[0].clone(), sin[0].clone()
        for axis in (1, 2):
            idx = slice(axis, section[axis] * 3, 3)
            out_cos[..., idx] = cos[axis, ..., idx]
            out_sin[..., idx] = sin[axis, ..., idx]
        return out_cos, out_sin
    cos_parts = [c[i % 3] for i, c in enumerate(torch.split(cos, list(section), dim=-1))]
    sin_parts = [s[i % 3] for i, s in enumerate(torch.split(sin, list(section), dim=-1))]
    return torch.cat(cos_parts, dim=-1), torch.cat(sin_parts, dim=-1)
