"""Images end to end on the real engine: the tiny VL presets behind a live server, driven by
the dashscope SDK (a local PNG through its upload flow, as the seed's quick start) and the
openai SDK (a data URL); token counts follow the published formula, repeats hit the cache."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashserve.engine.async_engine import AsyncEngine
from dashserve.multimodal.image import image_tokens
from tests.api.test_images import png
from tests.integration.conftest import API_KEY, LiveServer, start_server
from tests.utils.sdk import dashscope_at

pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def vl_live(model_dir_factory: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[LiveServer]:
    q3 = AsyncEngine.from_pretrained(str(model_dir_factory("qwen3-vl-tiny")), dtype="fp32",
                                     max_model_len=2048)
    q25 = AsyncEngine.from_pretrained(str(model_dir_factory("qwen2.5-vl-tiny")), dtype="fp32",
                                      max_model_len=2048)
    server = start_server({"qwen3-vl-plus": q3, "qwen2.5-vl-7b-instruct": q25},  # type: ignore[dict-item]
                          data_dir=tmp_path_factory.mktemp("data"))
    yield server
    server.stop()


def expected(width: int, height: int, patch: int, min_pixels: int, max_pixels: int) -> int:
    grid = image_tokens(height, width, patch_size=patch, merge_size=2,
                        min_pixels=min_pixels, max_pixels=max_pixels)[0]
    return grid + 2  # <|vision_start|> and <|vision_end|>


def test_seed_quick_start_with_a_local_png(vl_live: LiveServer, tmp_path: Path) -> None:

    picture = tmp_path / "dog_and_girl.png"
    picture.write_bytes(png(300, 500, seed=3))
    with dashscope_at(vl_live.native_url) as sdk:
        r = sdk.MultiModalConversation.call(
            api_key=API_KEY, model="qwen3-vl-plus", max_tokens=8,
            messages=[{"role": "user", "content": [{"image": str(picture)},
                                                   {"text": "图中描绘的是什么景象？"}]}])
    assert r.status_code == 200, r
    content = r.output.choices[0].message.content
    assert isinstance(content, list) and isinstance(content[0]["text"], str)
    assert r.usage["image_tokens"] == expected(300, 500, 16, 65536, 2621440)
    assert r.usage["input_tokens"] > r.usage["image_tokens"]


@pytest.mark.parametrize(("model", "patch", "min_px", "max_px"), [
    ("qwen3-vl-plus", 16, 65536, 2621440), ("qwen2.5-vl-7b-instruct", 14, 3136, 1003520)])
def test_openai_data_url_and_the_cache(vl_live: LiveServer, model: str, patch: int,
                                       min_px: int, max_px: int) -> None:
    import openai

    client = openai.OpenAI(api_key=API_KEY, base_url=vl_live.compat_url, max_retries=0)

    def ask(image: bytes) -> Any:
        url = "data:image/png;base64," + base64.b64encode(image).decode()
        return client.chat.completions.create(model=model, max_tokens=4, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "请问图片展现了有哪些商品？"}]}])

    first = ask(png(640, 480, seed=1))
    details = first.usage.prompt_tokens_details
    assert details.image_tokens == expected(640, 480, patch, min_px, max_px)  # type: ignore[union-attr]
    again = ask(png(640, 480, seed=1)).usage.prompt_tokens_details
    other = ask(png(640, 480, seed=2)).usage.prompt_tokens_details
    # the same picture reuses the prompt's KV blocks; another one stops before the image
    assert again.cached_tokens >= details.image_tokens  # type: ignore[union-attr]
    assert other.cached_tokens < 16  # type: ignore[union-attr]
