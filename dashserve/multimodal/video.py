"""Video frames for the Qwen VL encoders: how many frames, at what size, how many tokens.

Ported from the Qwen VL video preprocessing (``smart_nframes``/``fetch_video`` of the Qwen
VL utilities, the layout of the transformers Qwen2-VL video processor):

- a video file is sampled at ``fps`` frames per second (seed 003: 0.1 to 10, default 2):
  ``duration * fps`` frames rounded to an even count, at least ``MIN_FRAMES`` and at most
  ``MAX_FRAMES`` (and the file's own frame count), taken uniformly over the file;
- a frame list is padded to an even count by repeating its last frame;
- each frame is resized like an image (sides multiples of patch * merge) within
  [min_pixels, max_pixels], where max_pixels is further limited to
  ``total_pixels / frames * 2`` (all frames share the ``total_pixels`` budget) but never below
  ``1.05 * min_pixels`` (sides rounded down may still leave a frame a little under
  min_pixels, as in the reference);
- two consecutive frames make one temporal patch: a video of T frames of (h, w) pixels has
  grid (T / 2, h / patch, w / patch) and ``T / 2 * (h / patch) * (w / patch) / merge**2``
  tokens; one temporal patch spans ``2 / fps`` seconds (Qwen2.5-VL's M-RoPE time step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dashserve.errors import InvalidRequest
from dashserve.multimodal.image import smart_resize

TEMPORAL_PATCH = 2  # frames per temporal patch (both families)
MIN_FRAMES = 4
MAX_FRAMES = 768
MIN_FPS, MAX_FPS, DEFAULT_FPS = 0.1, 10.0, 2.0


@dataclass(frozen=True, slots=True)
class VideoSpec:
    """One family's per-frame and whole-video pixel budget (seed 003, video rows).

    ``min_pixels``/``max_pixels`` are the per-frame defaults, ``min_pixels_floor`` and
    ``max_pixels_limit`` the range a client may give; ``total_pixels`` both the default and
    the smallest ``total_pixels`` a client may give.
    """

    min_pixels: int
    min_pixels_floor: int
    max_pixels: int
    max_pixels_limit: int
    total_pixels: int


QWEN3_VL_PLUS = VideoSpec(65536, 4096, 655360, 2048000, 134217728)  # plus, flash, 235b
QWEN3_VL = VideoSpec(65536, 4096, 655360, 786432, 67108864)  # other Qwen3-VL, qwen-vl-max/plus
QWEN25_VL = VideoSpec(50176, 3136, 501760, 602112, 51380224)  # Qwen2.5-VL, QVQ, older qwen-vl


def check_fps(fps: object, where: str) -> float:
    """``fps`` as given (default 2), else 400 naming ``{where}.fps``."""
    if fps is None:
        return DEFAULT_FPS
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) \
            or not MIN_FPS <= fps <= MAX_FPS:
        raise InvalidRequest(f"Range of {where}.fps should be [{MIN_FPS}, {MAX_FPS}]",
                             param=f"{where}.fps")
    return float(fps)


def _round_by(x: float, f: int) -> int:
    return round(x / f) * f


def sampled_frames(total_frames: int, video_fps: float, fps: float, where: str = "video"
                   ) -> int:
    """How many frames a file of ``total_frames`` at ``video_fps`` gives at ``fps``."""
    if total_frames < 1 or video_fps <= 0:
        raise InvalidRequest(f"{where}: the video has no frames", param=where)
    lo = math.ceil(MIN_FRAMES / TEMPORAL_PATCH) * TEMPORAL_PATCH
    hi = math.floor(min(MAX_FRAMES, total_frames) / TEMPORAL_PATCH) * TEMPORAL_PATCH
    n = min(max(total_frames / video_fps * fps, lo), hi)
    n = _round_by(n, TEMPORAL_PATCH)
    if not TEMPORAL_PATCH <= n <= total_frames:
        raise InvalidRequest(f"{where}: the video is too short ({total_frames} frames); it "
                             f"needs at least {TEMPORAL_PATCH}", param=where)
    return n


def frame_indices(total_frames: int, n: int) -> list[int]:
    """The ``n`` frames taken uniformly over ``total_frames`` (first and last included)."""
    return [int(i) for i in np.linspace(0, total_frames - 1, n).round().astype(int)]


def padded_count(n: int) -> int:
    """A frame list's length once padded to whole temporal patches."""
    return math.ceil(n / TEMPORAL_PATCH) * TEMPORAL_PATCH


def frame_size(height: int, width: int, frames: int, factor: int, min_pixels: int,
               max_pixels: int, total_pixels: int) -> tuple[int, int]:
    """(height, width) every frame of a ``frames``-frame video is resized to."""
    cap = max(min(max_pixels, total_pixels / frames * TEMPORAL_PATCH), int(min_pixels * 1.05))
    return smart_resize(height, width, factor, min_pixels, int(cap))


def video_grid(frames: int, height: int, width: int, patch_size: int) -> tuple[int, int, int]:
    """(t, h, w) in patches of ``frames`` resized frames."""
    return frames // TEMPORAL_PATCH, height // patch_size, width // patch_size


def video_tokens(grid: tuple[int, int, int], merge_size: int) -> int:
    return grid[0] * grid[1] * grid[2] // merge_size**2


def seconds_per_grid_t(fps: float) -> float:
    """Seconds one temporal patch spans."""
    return TEMPORAL_PATCH / fps


def patch_timestamps(indices: list[int], fps: float) -> list[float]:
    """The time of each temporal patch of frames ``indices`` (at ``fps`` frames a second):
    the mean of its first and last frame's times, the last frame repeated to fill a patch."""
    idx = list(indices) + [indices[-1]] * (-len(indices) % TEMPORAL_PATCH)
    times = [i / fps for i in idx]
    return [(times[k] + times[k + TEMPORAL_PATCH - 1]) / 2
            for k in range(0, len(times), TEMPORAL_PATCH)]


def timestamp_text(seconds: float) -> str:
    """What Qwen3-VL reads before each temporal patch of a video."""
    return f"<{seconds:.1f} seconds>"


def patchify_video(frames: np.ndarray, patch_size: int, merge_size: int) -> np.ndarray:
    """[T, C, H, W] normalised frames (T even) → [t * h * w, C * 2 * patch * patch] in the
    processors' order (merge blocks together, the two frames of a patch side by side)."""
    t, channels, height, width = frames.shape
    if t % TEMPORAL_PATCH:
        raise ValueError(f"{t} frames: not whole temporal patches")
    gt, gh, gw = t // TEMPORAL_PATCH, height // patch_size, width // patch_size
    x = frames.reshape(gt, TEMPORAL_PATCH, channels, gh // merge_size, merge_size, patch_size,
                       gw // merge_size, merge_size, patch_size)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(x.reshape(
        gt * gh * gw, channels * TEMPORAL_PATCH * patch_size * patch_size))
