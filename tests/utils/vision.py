"""Test images for the vision models: random pixels patchified as the Qwen VL processors do
(normalised, the frame repeated over the temporal patch, patches grouped by merge block)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from dashserve.contracts.multimodal import MultiModalInput


def patchify(image: np.ndarray, patch: int, merge: int = 2, temporal: int = 2,
             mean: float = 0.5, std: float = 0.5) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """image [H, W, 3] uint8 (H, W multiples of patch * merge) -> (pixel_values, grid_thw)."""
    h, w, c = image.shape
    x = (image.astype(np.float32) / 255.0 - mean) / std
    x = np.repeat(x.transpose(2, 0, 1)[None], temporal, axis=0)  # [tp, C, H, W]
    gh, gw = h // patch, w // patch
    x = x.reshape(1, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return torch.from_numpy(x.reshape(gh * gw, c * temporal * patch * patch).copy()), (1, gh, gw)


def random_image(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def build_prompt(
    pieces: list, patch: int, merge: int = 2, image_token: int = 151655,
    start: int = 151652, end: int = 151653,
) -> tuple[list[int], list[MultiModalInput]]:
    """``pieces``: token-id lists and images ([H, W, 3] arrays) in prompt order."""
    ids: list[int] = []
    items: list[MultiModalInput] = []
    for piece in pieces:
        if isinstance(piece, np.ndarray):
            pixels, grid = patchify(piece, patch, merge)
            n = grid[0] * grid[1] * grid[2] // merge**2
            ids.append(start)
            digest = hashlib.sha256(piece.tobytes() + repr(piece.shape).encode()).hexdigest()
            items.append(MultiModalInput("image", pixels, grid, digest, len(ids), n))
            ids.extend([image_token] * n)
            ids.append(end)
        else:
            ids.extend(piece)
    return ids, items
