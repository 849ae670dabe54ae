"""The multimodal path: content lists in and out; media parts refused clearly."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import MULTIMODAL, NATIVE


def mm_body(content: list[dict[str, object]], **parameters: object) -> dict[str, object]:
    return {"model": "qwen3-vl-plus",
            "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": parameters}


async def test_text_parts_answer_with_content_list(client: httpx.AsyncClient) -> None:
    r = await client.post(MULTIMODAL, json=mm_body([{"text": "a"}, {"text": "b"}]))
    assert r.status_code == 200
    message = r.json()["output"]["choices"][0]["message"]
    assert message == {"role": "assistant", "content": [{"text": "Hello from dashserve!"}]}


async def test_result_format_text_is_ignored_on_multimodal(client: httpx.AsyncClient) -> None:
    r = await client.post(MULTIMODAL, json=mm_body([{"text": "a"}], result_format="text"))
    assert "choices" in r.json()["output"]


async def test_plain_string_content_is_accepted(client: httpx.AsyncClient) -> None:
    body = {"model": "qwen-plus", "input": {"messages": [{"role": "user", "content": "hi"}]}}
    assert (await client.post(MULTIMODAL, json=body)).status_code == 200


async def test_text_parts_on_the_text_path(client: httpx.AsyncClient) -> None:
    body = mm_body([{"text": "hi", "cache_control": {"type": "ephemeral"}}])
    body["model"] = "qwen-plus"
    assert (await client.post(NATIVE, json=body)).status_code == 200


async def test_image_to_a_model_without_vision_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(MULTIMODAL, json=mm_body([{"image": "https://example.com/a.png"},
                                                    {"text": "what is this?"}]))
    assert r.status_code == 400
    assert r.json()["code"] == "InvalidParameter"
    assert "does not accept images" in r.json()["message"] and r.json()["request_id"]


async def test_video_to_a_model_without_vision_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(MULTIMODAL, json=mm_body([
        {"video": ["https://example.com/1.jpg", "https://example.com/2.jpg"]},
        {"text": "what is this?"}]))
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter"
    assert "does not accept videos" in r.json()["message"] and r.json()["request_id"]


@pytest.mark.parametrize("part", [
    {"audio": "https://example.com/a.mp3"},
    {"type": "input_audio", "input_audio": {"data": "https://example.com/a.mp3"}},
])
async def test_audio_to_a_model_without_audio_is_refused(client: httpx.AsyncClient,
                                                         part: dict[str, object]) -> None:
    r = await client.post(MULTIMODAL, json=mm_body([part, {"text": "what is this?"}]))
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "InvalidParameter"
    assert "does not accept audio" in body["message"] and body["request_id"]


async def test_asr_options_on_a_model_without_audio_is_refused(
        client: httpx.AsyncClient) -> None:
    body = mm_body([{"text": "hi"}])
    body["parameters"] = {"asr_options": {"language": "zh"}}
    r = await client.post(MULTIMODAL, json=body)
    assert r.status_code == 400 and "asr_options" in r.json()["message"]
