"""Video frame math: sampling at fps, frame-list padding, per-frame sizes under total_pixels,
tokens, timestamps and the patch layout."""

from __future__ import annotations

import numpy as np
import pytest

from dashserve.errors import InvalidRequest
from dashserve.multimodal.image import patchify, smart_resize
from dashserve.multimodal.video import (
    QWEN3_VL,
    QWEN25_VL,
    check_fps,
    frame_indices,
    frame_size,
    padded_count,
    patch_timestamps,
    patchify_video,
    sampled_frames,
    seconds_per_grid_t,
    timestamp_text,
    video_grid,
    video_tokens,
)


@pytest.mark.parametrize(("frames", "video_fps", "fps", "expected"), [
    (300, 30.0, 2.0, 20),   # 10 s at 2 fps
    (300, 30.0, 1.0, 10),   # 10 s at 1 fps
    (300, 30.0, 0.1, 4),    # one frame in 10 s: raised to the minimum of 4
    (75, 25.0, 1.0, 4),     # 3 s at 1 fps: 3 frames, the minimum 4
    (250, 25.0, 0.5, 4),    # 10 s at 0.5 fps: 5 frames, 2.5 patches rounded half to even
    (350, 25.0, 0.5, 8),    # 14 s at 0.5 fps: 7 frames, 3.5 patches rounded to 4
    (3, 30.0, 2.0, 2),      # 3 frames in all: at most the file's frames, kept even
    (100_000, 30.0, 10.0, 768),  # capped at 768 frames
])
def test_sampled_frames(frames: int, video_fps: float, fps: float, expected: int) -> None:
    assert sampled_frames(frames, video_fps, fps) == expected


def test_too_short_videos_are_refused() -> None:
    for frames in (0, 1):
        with pytest.raises(InvalidRequest):
            sampled_frames(frames, 30.0, 2.0)


def test_frame_indices_cover_the_file() -> None:
    assert frame_indices(300, 4) == [0, 100, 199, 299]
    assert frame_indices(10, 10) == list(range(10))


def test_frame_lists_pad_to_whole_patches() -> None:
    assert [padded_count(n) for n in (1, 2, 3, 4, 7)] == [2, 2, 4, 4, 8]


@pytest.mark.parametrize("fps", [None, 0.1, 2, 10])
def test_fps_in_range(fps: float | None) -> None:
    assert check_fps(fps, "v") == (2.0 if fps is None else fps)


@pytest.mark.parametrize("fps", [0.05, 10.5, True, "2", -1])
def test_fps_out_of_range(fps: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_fps(fps, "input.messages[0].content[0]")
    assert info.value.param == "input.messages[0].content[0].fps"


def test_frame_size_matches_transformers_for_a_short_clip() -> None:
    """With the total budget out of reach, a frame is sized as transformers' Qwen3-VL video
    processor sizes two frames (one temporal patch) against twice the per-frame bounds."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import (
        smart_resize as hf,
    )

    for h, w in ((480, 640), (720, 1280), (100, 1000), (2000, 300)):
        ours = frame_size(h, w, 4, 32, QWEN3_VL.min_pixels, QWEN3_VL.max_pixels,
                          QWEN3_VL.total_pixels)
        assert ours == hf(2, h, w, temporal_factor=2, factor=32,
                          min_pixels=2 * QWEN3_VL.min_pixels,
                          max_pixels=2 * QWEN3_VL.max_pixels)


def test_total_pixels_shrinks_frames_but_not_below_the_minimum() -> None:
    spec = QWEN25_VL
    alone = frame_size(720, 1280, 4, 28, spec.min_pixels, spec.max_pixels, spec.total_pixels)
    many = frame_size(720, 1280, 600, 28, spec.min_pixels, spec.max_pixels, spec.total_pixels)
    assert many[0] * many[1] < alone[0] * alone[1] <= spec.max_pixels
    cap = spec.total_pixels / 600 * 2
    assert many == smart_resize(720, 1280, 28, spec.min_pixels, int(cap))
    tiny = frame_size(720, 1280, 600, 28, spec.min_pixels, spec.max_pixels, 4 * 28 * 28)
    assert tiny == smart_resize(720, 1280, 28, spec.min_pixels, int(spec.min_pixels * 1.05))
    # the floor holds frames near min_pixels (sides rounded down may leave them a little
    # under it, as in the reference), far above what the budget alone would leave
    assert tiny[0] * tiny[1] > 0.9 * spec.min_pixels
    assert smart_resize(720, 1280, 28, spec.min_pixels, int(4 * 28 * 28 / 600 * 2)) == (28, 28)


def test_tokens_and_time() -> None:
    grid = video_grid(20, 448, 616, 14)
    assert grid == (10, 32, 44)
    assert video_tokens(grid, 2) == 10 * 16 * 22
    assert seconds_per_grid_t(2.0) == 1.0 and seconds_per_grid_t(0.5) == 4.0


def test_timestamps_match_transformers() -> None:
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    for indices, fps in (([0, 15, 30, 45], 30.0), ([0, 100, 199, 299, 310], 29.97),
                         (list(range(6)), 2.0)):
        ref = Qwen3VLProcessor._calculate_timestamps(None, list(indices), fps, 2)
        assert patch_timestamps(indices, fps) == pytest.approx(ref)
    assert timestamp_text(0.25) == "<0.2 seconds>" and timestamp_text(3.0) == "<3.0 seconds>"


def test_two_equal_frames_patchify_as_an_image() -> None:
    rng = np.random.default_rng(0)
    frame = rng.standard_normal((3, 56, 84)).astype(np.float32)
    video = patchify_video(np.stack([frame, frame]), 14, 2)
    assert np.array_equal(video, patchify(frame, 14, 2, 2))
    other = rng.standard_normal((3, 56, 84)).astype(np.float32)
    two = patchify_video(np.stack([frame, other, other, frame]), 14, 2)
    assert two.shape == (2 * 4 * 6, 3 * 2 * 14 * 14)
    assert not np.array_equal(two[:24], two[24:])
