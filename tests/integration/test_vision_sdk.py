"""Images from the real SDKs against a live server: the dashscope SDK uploads a local file
(getPolicy, the form POST, oss://) on its own; the openai SDK sends a data URL."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_images import png, qwen3_tokens
from tests.integration.conftest import API_KEY, LiveServer, start_server
from tests.utils.fake_engine import FAKE_VISION, FakeEngine
from tests.utils.sdk import dashscope_at

FULL = "Hello from dashserve!"


@pytest.fixture(scope="module")
def vision_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    engine = FakeEngine(vision=FAKE_VISION)
    server = start_server({"qwen3-vl-plus": engine, "qwen-plus": FakeEngine()},
                          data_dir=tmp_path_factory.mktemp("data"))
    yield server
    server.stop()


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "dog_and_girl.png"
    path.write_bytes(png(300, 500, seed=7))
    return path


def messages(image: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"image": image}, {"text": "图中描绘的是什么景象？"}]}]


@pytest.mark.parametrize("form", ["path", "file://"])
def test_multimodal_conversation_with_a_local_file(vision_live: LiveServer, picture: Path,
                                                   form: str) -> None:

    with dashscope_at(vision_live.native_url) as sdk:
        image = str(picture) if form == "path" else f"file://{picture}"
        r = sdk.MultiModalConversation.call(api_key=API_KEY, model="qwen3-vl-plus",
                                            messages=messages(image))
    assert r.status_code == 200, r
    assert r.output.choices[0].message.content == [{"text": FULL}]
    assert r.usage["image_tokens"] == qwen3_tokens(300, 500) + 2
    engine = vision_live.engines["qwen3-vl-plus"]
    assert engine.submissions[-1].mm_inputs[0].length == qwen3_tokens(300, 500)
    record = vision_live.gate.records[-1]
    assert record.image_tokens == qwen3_tokens(300, 500) + 2


def test_openai_sdk_with_a_data_url(vision_live: LiveServer) -> None:
    import openai

    client = openai.OpenAI(api_key=API_KEY, base_url=vision_live.compat_url)
    url = "data:image/png;base64," + base64.b64encode(png(640, 480)).decode()
    completion = client.chat.completions.create(model="qwen3-vl-plus", messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": "请问图片展现了有哪些商品？"}]}])
    assert completion.choices[0].message.content == FULL
    details = completion.usage.prompt_tokens_details
    assert details.image_tokens == qwen3_tokens(640, 480) + 2  # type: ignore[union-attr]


def test_v2_client_uploads_a_local_file(vision_live: LiveServer, picture: Path) -> None:
    import dashscope

    client = dashscope.Client(api_key=API_KEY, base_url=vision_live.native_url)
    completion = client.chat.completions.create(model="qwen3-vl-plus", messages=[
        {"role": "user", "content": [{"type": "image", "url": str(picture)},
                                     {"type": "text", "text": "what is it?"}]}])
    assert completion.choices[0].message.content == FULL
    engine = vision_live.engines["qwen3-vl-plus"]
    assert engine.submissions[-1].mm_inputs[0].length == qwen3_tokens(300, 500)
