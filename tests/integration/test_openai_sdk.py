"""The real openai SDK (sync, async, the stream helper) against a live server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest

from tests.integration.conftest import API_KEY, LiveServer

FULL = "Hello from dashserve!"
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "你是谁？"}]


@pytest.fixture
def client(live: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=API_KEY, base_url=live.compat_url, max_retries=0) as c:
        yield c


def test_create(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert completion.choices[0].message.content == FULL
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    assert completion.id.startswith("chatcmpl-")
    raw = client.chat.completions.with_raw_response.create(model="qwen-plus", messages=MESSAGES)
    assert raw.headers["x-request-id"] and raw.parse().choices[0].message.content == FULL


def test_parameters_and_extra_body(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="qwen-plus", messages=MESSAGES, n=2, seed=3, max_completion_tokens=2, stop=["zz"],
        logprobs=True, top_logprobs=2, temperature=0.5,
        extra_body={"top_k": 5, "repetition_penalty": 1.1, "enable_thinking": False})
    assert [c.message.content for c in completion.choices] == ["Hello from", "[1]Hello"]
    assert all(c.finish_reason == "length" for c in completion.choices)
    lp = completion.choices[0].logprobs
    assert lp is not None and lp.content is not None and lp.content[0].token == "Hello"


def test_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="qwen-plus", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FULL
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6


def test_stream_helper_does_not_duplicate(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="qwen-plus", messages=MESSAGES, n=2) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert [c.message.role for c in final.choices] == ["assistant", "assistant"]
    assert [c.message.content for c in final.choices] == [FULL, "[1]" + FULL]


def test_heartbeats_are_ignored(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="slow-model", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == FULL


def test_async_client(live: LiveServer) -> None:
    async def main() -> list[str]:
        async with openai.AsyncOpenAI(api_key=API_KEY, base_url=live.compat_url) as client:
            async def ask(question: str) -> str:
                r = await client.chat.completions.create(
                    model="qwen-plus", messages=[{"role": "user", "content": question}])
                return r.choices[0].message.content or ""

            answers = list(await asyncio.gather(*(ask(q) for q in ("a", "b", "c"))))
            stream = await client.chat.completions.create(model="qwen-plus", messages=MESSAGES,
                                                          stream=True)
            answers.append("".join([c.choices[0].delta.content or "" async for c in stream]))
            return answers

    assert asyncio.run(main()) == [FULL] * 4


def test_models(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"qwen-plus", "qwen-max"} <= ids
    assert client.models.retrieve("qwen-max").id == "qwen-max"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_errors(live: LiveServer, client: openai.OpenAI) -> None:
    bad = openai.OpenAI(api_key="nope", base_url=live.compat_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.chat.completions.create(model="qwen-plus", messages=MESSAGES)
    assert auth.value.code == "invalid_api_key" and auth.value.request_id
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="qwen-nope", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError) as bad_request:
        client.chat.completions.create(model="qwen-plus", messages=MESSAGES, top_p=2)
    assert bad_request.value.param == "top_p" and bad_request.value.code == \
        "invalid_parameter_error"
    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(model="qwen-plus", messages=MESSAGES, tools=[
            {"type": "function", "function": {"name": "not a name", "parameters": {}}}])
    assert tools.value.param == "tools"


def test_error_inside_a_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="broken-model", messages=MESSAGES,
                                            stream=True)
    with pytest.raises(openai.APIError) as error:
        for _ in stream:
            pass
    assert error.value.code == "internal_error"
