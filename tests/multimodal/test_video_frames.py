"""Video frames made ready for the encoder: bounds, frame lists (mixed sizes, too many,
padding), resizing under total_pixels, hashing, tokens and timestamps."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dashserve.errors import InvalidRequest
from dashserve.multimodal.image import decode_image, preprocess_image
from dashserve.multimodal.video import QWEN3_VL, QWEN25_VL, frame_size
from dashserve.multimodal.video_file import decode_video
from dashserve.multimodal.video_frames import (
    VideoBounds,
    frame_list,
    preprocess_video,
    video_pixel_bounds,
)
from tests.api.test_images import png
from tests.utils.clips import video_clip

WHERE = "input.messages[0].content[0]"
CLIP = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def frames_of(*sizes: tuple[int, int], seed: int = 0) -> list[Image.Image]:
    return [decode_image(png(w, h, seed=seed + i)) for i, (w, h) in enumerate(sizes)]


def test_bounds_default_and_range() -> None:
    b = video_pixel_bounds(QWEN25_VL, None, None, None, WHERE)
    assert b == VideoBounds(50176, 501760, 51380224)
    assert video_pixel_bounds(QWEN3_VL, 4096, 786432, 10**9, WHERE) == \
        VideoBounds(4096, 786432, 10**9)
    for args, key in (((3000, None, None), "min_pixels"), ((None, 900000, None), "max_pixels"),
                      ((None, None, 1000), "total_pixels"), (("5", None, None), "min_pixels")):
        with pytest.raises(InvalidRequest) as info:
            video_pixel_bounds(QWEN25_VL, *args, WHERE)
        assert info.value.param == f"{WHERE}.{key}"


def test_frame_lists() -> None:
    assert frame_list(frames_of((40, 30), (40, 30), (40, 30)), WHERE).shape == (4, 30, 40, 3)
    padded = frame_list(frames_of((40, 30)), WHERE)
    assert padded.shape == (2, 30, 40, 3) and np.array_equal(padded[0], padded[1])
    with pytest.raises(InvalidRequest) as info:
        frame_list(frames_of((40, 30), (30, 40)), WHERE)
    assert "same size" in info.value.message and info.value.param == WHERE
    with pytest.raises(InvalidRequest):
        frame_list([], WHERE)
    with pytest.raises(InvalidRequest) as info:
        frame_list(frames_of((8, 8)) * 769, WHERE)
    assert "at most 768" in info.value.message


def test_two_equal_frames_encode_as_the_image() -> None:
    image = frames_of((120, 90))[0]
    bounds = VideoBounds(3136, 1003520, 51380224)
    video = preprocess_video(frame_list([image, image], WHERE), [0, 1], 2.0, bounds,
                             patch_size=14, merge_size=2, **CLIP)
    ref = preprocess_image(image, patch_size=14, merge_size=2, temporal_patch_size=2,
                           min_pixels=3136, max_pixels=1003520, **CLIP)
    assert video.grid_thw == ref.grid_thw and video.num_tokens == ref.num_tokens
    assert np.array_equal(video.pixel_values, ref.pixel_values)
    assert video.content_hash != ref.content_hash  # a video is not the picture it shows


def test_a_file_at_fps_1() -> None:
    """An mp4 (10 s, 25 fps, 320x240) at fps 1 on Qwen3-VL: 10 frames, 5 temporal patches,
    2 s each, stamped at 0.5 s, 2.5 s, ...; tokens (10/2) x (h/16) x (w/16) / 4."""
    clip = decode_video(video_clip(10, 25, 320, 240), 1.0, WHERE)
    bounds = video_pixel_bounds(QWEN3_VL, None, None, None, WHERE)
    video = preprocess_video(clip.frames, clip.indices, clip.video_fps, bounds, patch_size=16,
                             merge_size=2, **CLIP)
    h, w = frame_size(240, 320, 10, 32, 65536, 655360, 67108864)
    assert video.resized_hw == (h, w) == (256, 320)
    assert video.grid_thw == (5, 16, 20) and video.num_tokens == 5 * 16 * 20 // 4
    assert video.pixel_values.shape == (5 * 16 * 20, 3 * 2 * 16 * 16)
    assert video.timestamps == pytest.approx([(a + b) / 2 / 25 for a, b in zip(
        clip.indices[::2], clip.indices[1::2], strict=True)])
    again = preprocess_video(clip.frames, clip.indices, clip.video_fps, bounds, patch_size=16,
                             merge_size=2, **CLIP)
    assert again.content_hash == video.content_hash
    other = clip.frames.copy()
    other[3] ^= 1
    changed = preprocess_video(other, clip.indices, clip.video_fps, bounds, patch_size=16,
                               merge_size=2, **CLIP)
    assert changed.content_hash != video.content_hash


def test_total_pixels_shrinks_the_frames() -> None:
    frames = frame_list(frames_of(*[(640, 480)] * 40), WHERE)
    wide = preprocess_video(frames, list(range(40)), 2.0, VideoBounds(3136, 501760, 51380224),
                            patch_size=14, merge_size=2, **CLIP)
    tight = preprocess_video(frames, list(range(40)), 2.0, VideoBounds(3136, 501760, 40 * 3136),
                             patch_size=14, merge_size=2, **CLIP)
    assert tight.num_tokens < wide.num_tokens
    assert tight.resized_hw[0] * tight.resized_hw[1] <= 2 * 3136 * 1.05
