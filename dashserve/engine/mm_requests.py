"""Checking a request's images and videos against its prompt, and placing them (M-RoPE)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dashserve.contracts.multimodal import MultiModalInput
from dashserve.errors import InvalidRequest
from dashserve.model.mrope import mrope_positions
from dashserve.model.vision_config import VisionConfig


def check_mm_inputs(
    vision: VisionConfig | None, prompt: list[int], items: Sequence[MultiModalInput]
) -> tuple[MultiModalInput, ...]:
    """The items sorted by offset; InvalidRequest when one does not fit the model or prompt,
    or when a vision model's prompt holds placeholder tokens no image fills."""
    if any(it.kind == "audio" for it in items):
        raise InvalidRequest("the model does not accept audio", param="input")
    if vision is None:
        if items:
            raise InvalidRequest("the model does not accept images", param="input")
        return ()
    merge = vision.spatial_merge_size
    end = 0
    ordered = tuple(sorted(items, key=lambda it: it.offset))
    for item in ordered:
        t, h, w = item.grid_thw
        if min(t, h, w) < 1 or h % merge or w % merge:
            raise InvalidRequest(f"grid {item.grid_thw} is not a {merge}x{merge} grid",
                                 param="input")
        if item.kind == "image" and t != 1:
            raise InvalidRequest(f"an image has one frame, not {t}", param="input")
        if item.length != t * h * w // merge**2:
            raise InvalidRequest(
                f"grid {item.grid_thw} needs {t * h * w // merge**2} placeholder "
                f"tokens, not {item.length}", param="input")
        if tuple(item.pixel_values.shape) != (t * h * w, vision.patch_dim):
            raise InvalidRequest(
                f"pixel_values of shape {tuple(item.pixel_values.shape)} do not match "
                f"grid {item.grid_thw} ({vision.patch_dim} values per patch)", param="input")
        if item.offset < end or item.offset + item.length > len(prompt):
            raise InvalidRequest("an image's placeholder tokens overlap another item "
                                 "or lie outside the prompt", param="input")
        token = vision.image_token_id if item.kind == "image" else vision.video_token_id
        if any(tok != token for tok in prompt[item.offset:item.offset + item.length]):
            raise InvalidRequest(
                f"the prompt lacks the {item.length} placeholder tokens at {item.offset}",
                param="input")
        end = item.offset + item.length
    placeholders = {vision.image_token_id, vision.video_token_id}
    if sum(tok in placeholders for tok in prompt) != sum(it.length for it in ordered):
        raise InvalidRequest("the prompt has placeholder tokens without an image", param="input")
    return ordered


def place(
    vision: VisionConfig, num_tokens: int, items: Sequence[MultiModalInput]
) -> tuple[torch.Tensor | None, int]:
    """M-RoPE positions of the prompt and the decode delta (None, 0 for a text prompt)."""
    if not items:
        return None, 0
    tps = vision.tokens_per_second if vision.family == "qwen2.5-vl" else 0.0
    return mrope_positions(num_tokens, items, vision.spatial_merge_size, tps)
