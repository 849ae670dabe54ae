"""Videos end to end on the real engine: the seed's frame-list example (its image host served
from loopback) and an mp4 part at fps 1, through the dashscope SDK, on the tiny VL presets;
usage.video_tokens follows the formula and a repeated video is served from the prefix cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dashserve.engine.async_engine import AsyncEngine
from dashserve.multimodal.video import QWEN3_VL, QWEN25_VL, VideoSpec, frame_size
from tests.api.test_images import png
from tests.integration.conftest import API_KEY, LiveServer, start_server
from tests.utils.clips import video_clip
from tests.utils.media_server import MediaServer, media_server
from tests.utils.sdk import dashscope_at

FRAMES = [f"/imgextra/frame-{i}.jpg" for i in range(4)]


@pytest.fixture(scope="module")
def host() -> Iterator[MediaServer]:
    with media_server() as s:
        for i, path in enumerate(FRAMES):
            s.routes[path] = (png(1280, 720, seed=20 + i, fmt="JPEG"), "image/jpeg")
        s.routes["/clip.mp4"] = (video_clip(6, 25, 320, 240), "video/mp4")
        yield s


@pytest.fixture(scope="module")
def live(model_dir_factory: Any, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[LiveServer]:
    q3 = AsyncEngine.from_pretrained(str(model_dir_factory("qwen3-vl-tiny")), dtype="fp32",
                                     max_model_len=4096)
    q25 = AsyncEngine.from_pretrained(str(model_dir_factory("qwen2.5-vl-tiny")), dtype="fp32",
                                      max_model_len=4096)
    server = start_server({"qwen-vl-max-latest": q3, "qwen2.5-vl-7b-instruct": q25},  # type: ignore[dict-item]
                          data_dir=tmp_path_factory.mktemp("data"), media_allow_loopback=True)
    yield server
    server.stop()


def expected(frames: int, height: int, width: int, patch: int, spec: VideoSpec) -> int:
    h, w = frame_size(height, width, frames, patch * 2, spec.min_pixels, spec.max_pixels,
                      spec.total_pixels)
    return frames // 2 * (h // patch) * (w // patch) // 4 + 2


def call(live: LiveServer, model: str, content: list[dict[str, Any]]) -> Any:

    with dashscope_at(live.native_url) as sdk:
        return sdk.MultiModalConversation.call(
            api_key=API_KEY, model=model, max_tokens=4,
            messages=[{"role": "user", "content": content}])


def test_seed_frame_list_example(live: LiveServer, host: MediaServer) -> None:
    content = [{"video": [host.url(p) for p in FRAMES]}, {"text": "描述这个视频的具体过程"}]
    r = call(live, "qwen-vl-max-latest", content)
    assert r.status_code == 200, r
    assert isinstance(r.output.choices[0].message.content[0]["text"], str)
    tokens = expected(4, 720, 1280, 16, QWEN3_VL)
    assert r.usage["video_tokens"] == tokens
    assert r.usage["input_tokens"] > tokens  # with the timestamps and the question
    again = call(live, "qwen-vl-max-latest", content)
    assert again.usage["prompt_tokens_details"]["cached_tokens"] >= tokens - 2


@pytest.mark.parametrize(("model", "patch", "spec"), [
    ("qwen2.5-vl-7b-instruct", 14, QWEN25_VL), ("qwen-vl-max-latest", 16, QWEN3_VL)])
def test_mp4_at_fps_1(live: LiveServer, host: MediaServer, model: str, patch: int,
                      spec: VideoSpec) -> None:
    r = call(live, model, [{"video": host.url("/clip.mp4"), "fps": 1}, {"text": "describe"}])
    assert r.status_code == 200, r
    assert r.usage["video_tokens"] == expected(6, 240, 320, patch, spec)  # 6 s at 1 fps
