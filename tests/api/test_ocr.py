"""OCR tasks on a FakeEngine: the qwen-vl-ocr profile, ocr_options (prompt, grammar, ocr_result),
its refusals, and enable_rotate on image parts."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from dashserve.multimodal.image import decode_image
from dashserve.serving.ocr import KIE_PROMPT, result_json_schema
from tests.api.conftest import CHAT, MULTIMODAL
from tests.api.test_images import QWEN25_VISION, data_url, native, png
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate
from tests.utils.sse import native_events

SCHEMA = {"销售方名称": "", "购买方名称": "", "不含税价": "", "组织机构代码": "", "发票代码": ""}
ANSWER = ('{"销售方名称": "甲", "购买方名称": null, "不含税价": "12.5", "组织机构代码": "x", '
          '"发票代码": "0"}')
KIE = {"task": "key_information_extraction", "task_config": {"result_schema": SCHEMA}}
MODEL = "qwen-vl-ocr-latest"


@pytest.fixture
def ocr_engine() -> FakeEngine:
    return FakeEngine(vision=dataclasses.replace(QWEN25_VISION), script=[ANSWER])


@pytest.fixture
async def ocr_client(make_client: Callable[..., httpx.AsyncClient], ocr_engine: FakeEngine,
                     engine: FakeEngine, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    engines = {MODEL: ocr_engine, "qwen-vl-max": FakeEngine(vision=QWEN25_VISION),
               "qwen-plus": engine}
    async with make_client(engines, data_dir=tmp_path) as c:
        yield c


def ocr_body(options: Any = KIE, text: str = "用户自己的提示", **parameters: Any) -> dict[str, Any]:
    return native([{"image": data_url(png(120, 80)), "min_pixels": 3136,
                    "max_pixels": 6422528, "enable_rotate": True}, {"text": text}],
                  model=MODEL, ocr_options=options, **parameters)


def prompt_text(engine: FakeEngine) -> str:
    return engine.tokenizer.decode(engine.submissions[-1].prompt_token_ids)


async def test_key_information_extraction(ocr_client: httpx.AsyncClient,
                                          ocr_engine: FakeEngine) -> None:
    r = await ocr_client.post(MULTIMODAL, json=ocr_body())
    assert r.status_code == 200, r.text
    content = r.json()["output"]["choices"][0]["message"]["content"]
    assert content == [{"text": ANSWER, "ocr_result": json.loads(ANSWER)}]
    sub = ocr_engine.submissions[-1]
    # the task's fixed prompt (with the template) replaces the caller's text
    text = prompt_text(ocr_engine)
    assert "用户自己的提示" not in text
    assert KIE_PROMPT.replace("{result_schema}", json.dumps(SCHEMA, ensure_ascii=False)) in text
    assert sub.params.structured is not None
    assert sub.params.structured.json_schema == result_json_schema(SCHEMA)
    assert sub.params.repetition_penalty == 1.05 and sub.params.max_tokens <= 4096


async def test_ocr_result_in_the_last_stream_chunk(ocr_client: httpx.AsyncClient) -> None:
    r = await ocr_client.post(MULTIMODAL, json=ocr_body(incremental_output=True),
                              headers={"X-DashScope-SSE": "enable"})
    events = [e["data"] for e in native_events(r.text) if "data" in e]
    parts = [e["output"]["choices"][0]["message"]["content"] for e in events]
    assert parts[-1][-1]["ocr_result"] == json.loads(ANSWER)  # parsed from the whole answer
    assert "".join(p["text"] for ps in parts for p in ps) == ANSWER
    assert all("ocr_result" not in p for ps in parts[:-1] for p in ps)


def test_result_schema_becomes_a_closed_json_schema() -> None:
    schema = result_json_schema({"a": "", "items": [{"name": "", "n": ""}], "o": {"b": ""}})
    assert schema["required"] == ["a", "items", "o"]
    assert schema["additionalProperties"] is False
    item = schema["properties"]["items"]["anyOf"][0]["items"]
    assert item["required"] == ["name", "n"] and item["additionalProperties"] is False
    assert schema["properties"]["o"]["properties"]["b"]["anyOf"][1] == {"type": "null"}


async def test_ocr_profile_defaults(ocr_client: httpx.AsyncClient,
                                    ocr_engine: FakeEngine) -> None:
    body = native([{"image": data_url(png(120, 80))}, {"text": "读出图中文字"}], model=MODEL)
    r = await ocr_client.post(MULTIMODAL, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["output"]["choices"][0]["message"]["content"] == [{"text": ANSWER}]
    params = ocr_engine.submissions[-1].params
    assert params.repetition_penalty == 1.05 and params.structured is None
    assert "读出图中文字" in prompt_text(ocr_engine)
    r = await ocr_client.post(MULTIMODAL, json=native(
        [{"image": data_url(png(120, 80))}, {"text": "x"}], model=MODEL, max_tokens=4097))
    assert r.status_code == 400 and "max_tokens" in r.json()["message"]


@pytest.mark.parametrize(("options", "param"), [
    ({"task": "no_such_task"}, "ocr_options.task"),
    ({"task": "text_recognition"}, "ocr_options.task"),
    ({"task_config": {"result_schema": SCHEMA}}, "ocr_options.task"),
    ({"task": "key_information_extraction"}, "ocr_options.task_config.result_schema"),
    ({"task": "key_information_extraction", "task_config": {"result_schema": {}}},
     "ocr_options.task_config.result_schema"),
    ({"task": "key_information_extraction", "task_config": []}, "ocr_options.task_config"),
    ("key_information_extraction", "ocr_options"),
])
async def test_bad_ocr_options(ocr_client: httpx.AsyncClient, gate: RecordingGate,
                               options: Any, param: str) -> None:
    r = await ocr_client.post(MULTIMODAL, json=ocr_body(options))
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "InvalidParameter" and body["request_id"]
    assert param in body["message"]
    assert not gate.records


async def test_ocr_options_refused_elsewhere(ocr_client: httpx.AsyncClient,
                                             gate: RecordingGate) -> None:
    body = native([{"image": data_url(png(120, 80))}, {"text": "x"}], model="qwen-vl-max",
                  ocr_options=KIE)
    r = await ocr_client.post(MULTIMODAL, json=body)
    assert r.status_code == 400 and "ocr_options" in r.json()["message"]
    chat = {"model": MODEL, "ocr_options": KIE, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(png(120, 80))}}]}]}
    r = await ocr_client.post(CHAT, json=chat)
    assert r.status_code == 400 and "ocr_options" in r.json()["error"]["message"]
    # a task needs an image to read
    r = await ocr_client.post(MULTIMODAL, json=native([{"text": "x"}], model=MODEL,
                                                      ocr_options=KIE))
    assert r.status_code == 400 and "image" in r.json()["message"]
    r = await ocr_client.post(MULTIMODAL, json=ocr_body(
        response_format={"type": "json_object"}, text="json"))
    assert r.status_code == 400 and "response_format" in r.json()["message"]
    assert not gate.records


def rotated_jpeg(width: int, height: int) -> bytes:
    """A JPEG stored ``width`` x ``height`` whose EXIF says: turn it 90 degrees to view."""
    data = np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(data)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


def test_enable_rotate_turns_the_picture_upright() -> None:
    data = rotated_jpeg(200, 100)
    assert decode_image(data).size == (200, 100)
    assert decode_image(data, rotate=True).size == (100, 200)


async def test_enable_rotate_on_the_wire(ocr_client: httpx.AsyncClient,
                                         ocr_engine: FakeEngine) -> None:
    def body(rotate: Any) -> dict[str, Any]:
        return native([{"image": data_url(rotated_jpeg(280, 56), "jpeg"),
                        "enable_rotate": rotate}, {"text": "x"}], model=MODEL,
                      vl_enable_image_hw_output=True)

    plain = (await ocr_client.post(MULTIMODAL, json=body(False))).json()["usage"]["image_hw"]
    turned = (await ocr_client.post(MULTIMODAL, json=body(True))).json()["usage"]["image_hw"]
    assert plain == [[56, 280]] and turned == [[280, 56]]
    hashes = [item.content_hash for s in ocr_engine.submissions[-2:] for item in s.mm_inputs]
    assert hashes[0] != hashes[1]  # the caches see two different pictures
    r = await ocr_client.post(MULTIMODAL, json=body("yes"))
    assert r.status_code == 400 and "enable_rotate" in r.json()["message"]
