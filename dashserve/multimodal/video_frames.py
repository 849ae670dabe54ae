"""A video's frames made ready for the vision encoder: bounds checked, resized, patchified.

``video_pixel_bounds`` checks a part's ``min_pixels``/``max_pixels``/``total_pixels`` against
the family's video rows (400 naming the key); ``frame_list`` turns decoded frame images into
one array (same size required, at most ``MAX_FRAMES``, padded to whole temporal patches by
repeating the last); ``preprocess_video`` resizes every frame as images are resized (PIL
bicubic), normalises and patchifies them, and says how many tokens the video costs, how long
one temporal patch lasts and when each starts (Qwen3-VL's timestamps).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dashserve.errors import InvalidRequest
from dashserve.multimodal.video import (
    MAX_FRAMES,
    TEMPORAL_PATCH,
    VideoSpec,
    frame_size,
    padded_count,
    patch_timestamps,
    patchify_video,
    seconds_per_grid_t,
    video_grid,
    video_tokens,
)


@dataclass(frozen=True, slots=True)
class VideoBounds:
    min_pixels: int
    max_pixels: int
    total_pixels: int


@dataclass(frozen=True, slots=True)
class ProcessedVideo:
    """One video, resized and patchified for the vision encoder."""

    pixel_values: np.ndarray  # [t * h * w patches, 3 * 2 * patch * patch], float32
    grid_thw: tuple[int, int, int]
    resized_hw: tuple[int, int]
    content_hash: str
    num_tokens: int  # placeholder tokens of the whole video
    second_per_grid_t: float
    timestamps: tuple[float, ...]  # seconds at each temporal patch


def _int_in(value: object, lo: int, hi: int, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidRequest(f"Range of {key} should be [{lo}, {hi}]", param=key)
    return value


def video_pixel_bounds(spec: VideoSpec, min_pixels: object, max_pixels: object,
                       total_pixels: object, where: str) -> VideoBounds:
    """The part's per-frame and whole-video bounds, the family's defaults where not given."""
    lo = spec.min_pixels if min_pixels is None else _int_in(
        min_pixels, spec.min_pixels_floor, spec.max_pixels_limit, f"{where}.min_pixels")
    hi = max(lo, spec.max_pixels) if max_pixels is None else _int_in(
        max_pixels, lo, spec.max_pixels_limit, f"{where}.max_pixels")
    total = spec.total_pixels if total_pixels is None else _int_in(
        total_pixels, spec.total_pixels, 2**40, f"{where}.total_pixels")
    return VideoBounds(lo, hi, total)


def frame_list(images: list[Image.Image], where: str) -> np.ndarray:
    """[T, H, W, 3] uint8 of a frame list, padded to whole temporal patches."""
    if not images:
        raise InvalidRequest(f"{where}: the video has no frames", param=where)
    if len(images) > MAX_FRAMES:
        raise InvalidRequest(f"{where}: a video may hold at most {MAX_FRAMES} frames; got "
                             f"{len(images)}", param=where)
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise InvalidRequest(f"{where}: every frame of a video must have the same size; got "
                             f"{', '.join(f'{w}x{h}' for w, h in sorted(sizes))}", param=where)
    frames = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]
    frames += [frames[-1]] * (padded_count(len(frames)) - len(frames))
    return np.stack(frames)


def preprocess_video(frames: np.ndarray, indices: list[int], fps: float, bounds: VideoBounds,
                     *, patch_size: int, merge_size: int, mean: tuple[float, float, float],
                     std: tuple[float, float, float],
                     index_fps: float | None = None) -> ProcessedVideo:
    """Resize, normalise and patchify [T, H, W, 3] uint8 frames (T even) sampled at ``fps``,
    frame ``indices`` of a sequence of ``index_fps`` (default ``fps``) frames a second
    (CPU-bound: run it off the event loop)."""
    count, height, width, _ = frames.shape
    assert count % TEMPORAL_PATCH == 0
    h, w = frame_size(height, width, count, patch_size * merge_size, bounds.min_pixels,
                      bounds.max_pixels, bounds.total_pixels)
    digest = hashlib.sha256(f"video:{count}x{width}x{height}:{w}x{h}:{patch_size}:"
                            f"{merge_size}:{fps}:".encode())
    resized = np.empty((count, 3, h, w), np.float32)
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    for k, frame in enumerate(frames):
        digest.update(frame.tobytes())
        image = Image.fromarray(frame).resize((w, h), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) * np.float32(1 / 255)
        resized[k] = (pixels - m) / s
    grid = video_grid(count, h, w, patch_size)
    return ProcessedVideo(patchify_video(resized, patch_size, merge_size), grid, (h, w),
                          digest.hexdigest(), video_tokens(grid, merge_size),
                          seconds_per_grid_t(fps),
                          tuple(patch_timestamps(indices, index_fps or fps)))
