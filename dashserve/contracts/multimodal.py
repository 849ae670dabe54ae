"""Multimodal inputs as they cross from serving into the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True, slots=True, eq=False)
class MultiModalInput:
    """One image (or video) ready for the vision encoder, placed in a prompt.

    ``pixel_values`` is the flattened patch tensor of the Qwen VL processors
    ([grid_t * grid_h * grid_w, channels * temporal_patch * patch * patch], float32);
    ``grid_thw`` its (t, h, w) in patches; ``content_hash`` a sha256 hex digest of the
    decoded pixels and the resize, which keys the prefix cache and the encoder cache;
    ``offset`` the index in the prompt's token ids of its first placeholder token
    (``<|image_pad|>`` or ``<|video_pad|>``), ``length`` the number of placeholder tokens
    (grid_t * grid_h * grid_w // spatial_merge_size**2). ``second_per_grid_t`` is the seconds
    per temporal patch of a video (Qwen2.5-VL's M-RoPE scales time by it), 0 for images.
    """

    kind: Literal["image", "video", "audio"]
    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    content_hash: str
    offset: int
    length: int
    second_per_grid_t: float = 0.0
    # audio (kind "audio"): ``pixel_values`` holds log-mel features [mel bins, frames padded
    # to whole encoder chunks], of which the first ``audio_frames`` are real; ``grid_thw`` is
    # (0, 0, 0) and the placeholder token is ``<|audio_pad|>``
    audio_frames: int = 0
