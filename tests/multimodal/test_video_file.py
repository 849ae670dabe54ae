"""Video files through PyAV: frames sampled at fps from generated clips of known fps and
length, their token counts, and every bad file refused with a 400 naming the part."""

from __future__ import annotations

import numpy as np
import pytest

from dashserve.errors import InvalidRequest
from dashserve.multimodal import video_file
from dashserve.multimodal.video import (
    QWEN25_VL,
    frame_size,
    video_grid,
    video_tokens,
)
from dashserve.multimodal.video_file import decode_video
from tests.utils.clips import audio_clip, video_clip

WHERE = "input.messages[0].content[0]"


@pytest.mark.parametrize(("seconds", "clip_fps", "fps", "frames"), [
    (10, 25, 2.0, 20), (10, 25, 1.0, 10), (4, 30, 2.0, 8), (2, 10, 0.5, 4), (6, 24, 10.0, 60)])
def test_frames_sampled_at_fps(seconds: int, clip_fps: int, fps: float, frames: int) -> None:
    video = decode_video(video_clip(seconds, clip_fps), fps, WHERE)
    total = seconds * clip_fps
    assert video.total_frames == total and video.video_fps == clip_fps
    assert video.frames.shape == (frames, 48, 64, 3)
    assert video.indices == [round(i * (total - 1) / (frames - 1)) for i in range(frames)]
    # each kept frame is the one at its index (grey level 7 * i, within codec noise)
    levels = video.frames.reshape(frames, -1).mean(axis=1)
    assert np.allclose(levels, [(7 * i) % 256 for i in video.indices], atol=6)


def test_tokens_of_a_clip_follow_the_formula() -> None:
    """An mp4 of 8 s at 25 fps (320x240) at fps 1 on Qwen2.5-VL: 8 frames, each side rounded
    to a multiple of 28 (252x308, inside the per-frame bounds): 4 x 18 x 22 patches, 396
    tokens."""
    video = decode_video(video_clip(8, 25, width=320, height=240), 1.0, WHERE)
    t, h, w, _ = video.frames.shape
    size = frame_size(h, w, t, 28, QWEN25_VL.min_pixels, QWEN25_VL.max_pixels,
                      QWEN25_VL.total_pixels)
    assert t == 8 and size == (252, 308)
    grid = video_grid(t, *size, 14)
    assert grid == (4, 18, 22) and video_tokens(grid, 2) == 396


@pytest.mark.parametrize("data", [
    b"", b"not a video at all" * 50, video_clip(3, 10)[:2000], video_clip(3, 10)[: -4000]])
def test_undecodable_or_truncated_files(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_video(data, 2.0, WHERE)
    assert info.value.param == WHERE


def test_audio_only_and_empty_files() -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_video(audio_clip(), 2.0, WHERE)
    assert "audio only" in info.value.message
    with pytest.raises(InvalidRequest):
        decode_video(video_clip(0, 10), 2.0, WHERE)
    with pytest.raises(InvalidRequest) as info:  # one frame cannot fill a temporal patch
        decode_video(video_clip(0.1, 10), 2.0, WHERE)
    assert "too short" in info.value.message


def test_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    data = video_clip(3, 10)
    monkeypatch.setattr(video_file, "MAX_DURATION_S", 2.0)
    with pytest.raises(InvalidRequest) as info:
        decode_video(data, 2.0, WHERE)
    assert "lasts" in info.value.message
    monkeypatch.setattr(video_file, "MAX_DURATION_S", 600.0)
    monkeypatch.setattr(video_file, "MAX_FILE_FRAMES", 20)
    with pytest.raises(InvalidRequest) as info:
        decode_video(data, 2.0, WHERE)
    assert "more than 20 frames" in info.value.message
    monkeypatch.setattr(video_file, "MAX_FILE_FRAMES", 36_000)
    monkeypatch.setattr(video_file, "MAX_FRAME_PIXELS", 64 * 47)
    with pytest.raises(InvalidRequest) as info:
        decode_video(data, 2.0, WHERE)
    assert "pixels" in info.value.message
