"""The seed's OCR example end to end: the qwen2.5-vl-tiny preset (random weights) served as
qwen-vl-ocr-latest behind a live server, its invoice image served from loopback, driven by
the dashscope SDK. The grammar keeps ``ocr_result`` to the schema's keys whatever the weights."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dashserve.engine.async_engine import AsyncEngine
from tests.api.test_images import png
from tests.integration.conftest import API_KEY, LiveServer, start_server
from tests.utils.media_server import MediaServer, media_server
from tests.utils.sdk import dashscope_at

SCHEMA = {"销售方名称": "", "购买方名称": "", "不含税价": "", "组织机构代码": "", "发票代码": ""}
# seed 001: the text part the example sends (the service writes the task's own prompt)
SEED_TEXT = "假设你是一名信息提取专家。... 输入的 JSON 模式内容如下: {result_schema}。"


@pytest.fixture(scope="module")
def invoice_host() -> Iterator[MediaServer]:
    with media_server() as s:
        s.routes["/image/car_invoice/car-invoice-img00040.jpg"] = (
            png(320, 200, seed=4, fmt="JPEG"), "image/jpeg")
        yield s


@pytest.fixture(scope="module")
def ocr_live(model_dir_factory: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[LiveServer]:
    engine = AsyncEngine.from_pretrained(str(model_dir_factory("qwen2.5-vl-tiny")),
                                         dtype="fp32", max_model_len=4096)
    server = start_server({"qwen-vl-ocr-latest": engine},  # type: ignore[dict-item]
                          data_dir=tmp_path_factory.mktemp("data"), media_allow_loopback=True)
    yield server
    server.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_seed_key_information_extraction(ocr_live: LiveServer, invoice_host: MediaServer,
                                         stream: bool) -> None:

    messages = [{"role": "user", "content": [
        {"image": invoice_host.url("/image/car_invoice/car-invoice-img00040.jpg"),
         "min_pixels": 3136, "max_pixels": 6422528, "enable_rotate": True},
        {"text": SEED_TEXT}]}]
    params = {"ocr_options": {"task": "key_information_extraction",
                              "task_config": {"result_schema": SCHEMA}}}
    with dashscope_at(ocr_live.native_url) as sdk:
        r = sdk.MultiModalConversation.call(
            model="qwen-vl-ocr-latest", messages=messages, api_key=API_KEY, stream=stream,
            incremental_output=stream, **params)
        if stream:
            chunks = list(r)
            assert all(c.status_code == 200 for c in chunks), chunks[-1]
            r = chunks[-1]
    assert r.status_code == 200, r
    result = r.output.choices[0].message.content[0]["ocr_result"]
    assert set(result) == set(SCHEMA)
    assert all(v is None or isinstance(v, str) for v in result.values())
    assert r.output.choices[0].finish_reason == "stop"
    assert r.usage["image_tokens"] > 0
