"""The real dashscope SDK (1.x classes and the 2.0 Client) against a live server."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.conftest import API_KEY, LiveServer


async def close_sdk_session() -> None:
    """AioGeneration keeps one aiohttp session per loop; close it before the loop ends."""
    from dashscope.api_entities.aio_session import close_shared_aio_session

    await close_shared_aio_session()

FULL = "Hello from dashserve!"
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "你是谁？"}]


def test_generation_call_message(dashscope_sdk: Any) -> None:
    r = dashscope_sdk.Generation.call(model="qwen-plus", messages=MESSAGES,
                                      result_format="message")
    assert r.status_code == 200, r
    assert r.output.choices[0].message.content == FULL
    assert r.output.choices[0].finish_reason == "stop"
    assert r.usage.output_tokens == 6 and r.usage.input_tokens > 0
    assert r.request_id and r.headers["x-request-id"] == r.request_id


def test_generation_call_prompt_text_format(dashscope_sdk: Any) -> None:
    r = dashscope_sdk.Generation.call(model="qwen-plus", prompt="hi")
    assert r.status_code == 200 and r.output.text == FULL


def test_stream_incremental(dashscope_sdk: Any) -> None:
    chunks = list(dashscope_sdk.Generation.call(
        model="qwen-plus", messages=MESSAGES, result_format="message", stream=True,
        incremental_output=True))
    assert all(c.status_code == 200 for c in chunks)
    assert "".join(c.output.choices[0].message.content for c in chunks) == FULL
    assert chunks[-1].output.choices[0].finish_reason == "stop"
    assert chunks[-1].usage.output_tokens == 6


def test_stream_cumulative_merged_by_the_sdk(dashscope_sdk: Any) -> None:
    # the SDK asks for deltas on the wire and rebuilds snapshots itself
    chunks = list(dashscope_sdk.Generation.call(
        model="qwen-plus", messages=MESSAGES, result_format="message", stream=True,
        incremental_output=False))
    texts = [c.output.choices[0].message.content for c in chunks]
    assert texts[-1] == FULL and texts[1] == "Hello from"


def test_stream_server_default_snapshots(dashscope_sdk: Any) -> None:
    chunks = list(dashscope_sdk.Generation.call(model="qwen-plus", prompt="hi", stream=True))
    assert [c.output.text for c in chunks][-1] == FULL
    assert chunks[1].output.text == "Hello from"


def test_stream_n_two_merged_by_the_sdk(dashscope_sdk: Any) -> None:
    chunks = list(dashscope_sdk.Generation.call(
        model="qwen-plus", messages=MESSAGES, result_format="message", stream=True,
        incremental_output=False, n=2))
    final = chunks[-1]
    # the SDK hands the merged choices back as plain dicts
    contents = sorted(c["message"]["content"] for c in final.output.choices)
    assert contents == ["Hello from dashserve!", "[1]Hello from dashserve!"]


def test_stream_with_heartbeats(dashscope_sdk: Any) -> None:
    chunks = list(dashscope_sdk.Generation.call(model="slow-model", prompt="hi", stream=True,
                                                incremental_output=True))
    assert "".join(c.output.choices[0].message.content for c in chunks) == FULL


def test_logprobs(dashscope_sdk: Any) -> None:
    r = dashscope_sdk.Generation.call(model="qwen-plus", messages=MESSAGES,
                                      result_format="message", logprobs=True, top_logprobs=2,
                                      max_tokens=2)
    content = r.output.choices[0].logprobs["content"]
    assert [e["token"] for e in content] == ["Hello", " from"]


def test_errors_are_responses(dashscope_sdk: Any) -> None:
    bad_key = dashscope_sdk.Generation.call(model="qwen-plus", prompt="hi", api_key="nope")
    assert (bad_key.status_code, bad_key.code) == (401, "InvalidApiKey")
    unknown = dashscope_sdk.Generation.call(model="qwen-nope", prompt="hi")
    assert (unknown.status_code, unknown.code) == (404, "ModelNotFound")
    bad = dashscope_sdk.Generation.call(model="qwen-plus", prompt="hi", temperature=9)
    assert bad.status_code == 400 and "temperature" in bad.message
    search = dashscope_sdk.Generation.call(model="qwen-plus", prompt="hi", enable_search=True)
    assert search.status_code == 400 and "enable_search" in search.message


def test_error_inside_a_stream(dashscope_sdk: Any) -> None:
    chunks = list(dashscope_sdk.Generation.call(model="broken-model", prompt="hi", stream=True,
                                                incremental_output=True))
    assert [c.status_code for c in chunks] == [200, 200, 500]
    assert chunks[-1].code == "InternalError" and chunks[-1].request_id


def test_aio_generation(dashscope_sdk: Any) -> None:
    from dashscope.aigc.generation import AioGeneration

    async def main() -> list[Any]:
        calls = [AioGeneration.call(model="qwen-plus", messages=MESSAGES,
                                    result_format="message") for _ in range(3)]
        results = list(await asyncio.gather(*calls))
        await close_sdk_session()
        return results

    results = asyncio.run(main())
    assert [r.output.choices[0].message.content for r in results] == [FULL] * 3


def test_aio_generation_stream(dashscope_sdk: Any) -> None:
    from dashscope.aigc.generation import AioGeneration

    async def main() -> list[Any]:
        stream = await AioGeneration.call(model="slow-model", messages=MESSAGES,
                                          result_format="message", stream=True,
                                          incremental_output=True)
        chunks = [chunk async for chunk in stream]
        await close_sdk_session()
        return chunks

    chunks = asyncio.run(main())
    assert "".join(c.output.choices[0].message.content for c in chunks) == FULL


def test_aio_error_inside_a_stream(dashscope_sdk: Any) -> None:
    from dashscope.aigc.generation import AioGeneration

    async def main() -> list[Any]:
        stream = await AioGeneration.call(model="broken-model", prompt="hi", stream=True,
                                          incremental_output=True)
        chunks = [chunk async for chunk in stream]
        await close_sdk_session()
        return chunks

    chunks = asyncio.run(main())
    assert chunks[-1].status_code == 500 and chunks[-1].code == "InternalError"


def test_multimodal_conversation_text(dashscope_sdk: Any) -> None:
    messages = [{"role": "user", "content": [{"text": "你好"}]}]
    r = dashscope_sdk.MultiModalConversation.call(model="qwen3-vl-plus", messages=messages)
    assert r.status_code == 200, r
    assert r.output.choices[0].message.content[0]["text"] == FULL
    stream = dashscope_sdk.MultiModalConversation.call(
        model="qwen3-vl-plus", messages=messages, stream=True, incremental_output=True)
    text = ""
    for chunk in stream:
        if chunk.output.choices[0].message.content:
            text += chunk.output.choices[0].message.content[0]["text"]
    assert text == FULL


def test_images_to_a_model_without_vision_are_refused(dashscope_sdk: Any) -> None:
    messages = [{"role": "user", "content": [
        {"image": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/"
                  "20241022/emyrja/dog_and_girl.jpeg"},
        {"text": "图中描绘的是什么景象?"}]}]
    r = dashscope_sdk.MultiModalConversation.call(model="qwen3-vl-plus", messages=messages)
    assert r.status_code == 400 and r.code == "InvalidParameter"
    assert "does not accept images" in r.message


def test_tokenization(dashscope_sdk: Any) -> None:
    r = dashscope_sdk.Tokenization.call(model="qwen-plus", messages=MESSAGES)
    assert r.status_code == 200
    generated = dashscope_sdk.Generation.call(model="qwen-plus", messages=MESSAGES)
    assert r.usage["input_tokens"] == generated.usage.input_tokens


def test_v2_client_native(live: LiveServer) -> None:
    import dashscope

    client = dashscope.Client(api_key=API_KEY, base_url=live.native_url)
    completion = client.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert completion.choices[0].message.content == FULL
    stream = client.chat.completions.create(model="slow-model", messages=MESSAGES, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == FULL


def test_v2_client_openai_protocol(live: LiveServer) -> None:
    import dashscope

    client = dashscope.Client(api_key=API_KEY, base_url=live.compat_url, protocol="openai")
    completion = client.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert completion.choices[0].message.content == FULL
    stream = client.chat.completions.create(model="qwen-plus", messages=MESSAGES, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream
                   if chunk.choices) == FULL


def test_v2_client_errors(live: LiveServer) -> None:
    import dashscope
    import pytest

    client = dashscope.Client(api_key="nope", base_url=live.native_url)
    with pytest.raises(dashscope.v2.errors.AuthenticationError):
        client.chat.completions.create(model="qwen-plus", messages=MESSAGES)
