"""OpenAI-compatible mode: completions, chunks, usage, parameters, models, refusals."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import CHAT, chat_body
from tests.utils.fake_engine import FakeEngine
from tests.utils.sse import openai_chunks


async def test_completion_shape(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    r = await client.post(CHAT, json=chat_body())
    assert r.status_code == 200
    body = r.json()
    rid = r.headers["x-request-id"]
    assert body["id"] == f"chatcmpl-{rid}" and body["object"] == "chat.completion"
    assert body["model"] == "qwen-plus" and isinstance(body["created"], int)
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant",
                                                        "content": "Hello from dashserve!"},
                                "finish_reason": "stop", "logprobs": None}]
    prompt_len = len(engine.submissions[0].prompt_token_ids)
    assert body["usage"] == {"prompt_tokens": prompt_len, "completion_tokens": 6,
                             "total_tokens": prompt_len + 6,
                             "prompt_tokens_details": {"cached_tokens": 0}}


async def test_stream_chunks(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json=chat_body(stream=True))
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = openai_chunks(r.text)
    assert chunks[-1] == "[DONE]"
    data = chunks[:-1]
    assert len({c["id"] for c in data}) == 1 and len({c["created"] for c in data}) == 1
    deltas = [c["choices"][0]["delta"] for c in data]
    assert deltas[0] == {"role": "assistant", "content": "Hello"}
    assert all("role" not in d for d in deltas[1:])
    assert "".join(d["content"] for d in deltas) == "Hello from dashserve!"
    reasons = [c["choices"][0]["finish_reason"] for c in data]
    assert reasons == [None] * (len(data) - 1) + ["stop"]
    assert all(c["usage"] is None for c in data)


async def test_stream_include_usage(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json=chat_body(stream=True,
                                               stream_options={"include_usage": True}))
    chunks = openai_chunks(r.text)
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 6


async def test_stream_n_two_role_once_per_choice(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json=chat_body(stream=True, n=2))
    text = {0: "", 1: ""}
    roles = {0: 0, 1: 0}
    for chunk in openai_chunks(r.text)[:-1]:
        (choice,) = chunk["choices"]
        roles[choice["index"]] += "role" in choice["delta"]
        text[choice["index"]] += choice["delta"]["content"]
    assert roles == {0: 1, 1: 1}
    assert text == {0: "Hello from dashserve!", 1: "[1]Hello from dashserve!"}


async def test_parameters_and_extras(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    body = chat_body(temperature=0.2, top_p=0.9, seed=7, max_tokens=50, stop="x",
                     presence_penalty=0.5, frequency_penalty=0.25, n=3, logprobs=True,
                     top_logprobs=1, top_k=5, repetition_penalty=1.1, enable_thinking=False)
    assert (await client.post(CHAT, json=body)).status_code == 200
    sp = engine.submissions[0].params
    assert (sp.temperature, sp.top_p, sp.seed, sp.max_tokens, sp.stop) == (0.2, 0.9, 7, 50,
                                                                          ("x",))
    assert (sp.presence_penalty, sp.frequency_penalty, sp.n) == (0.5, 0.25, 3)
    assert (sp.logprobs, sp.top_logprobs, sp.top_k, sp.repetition_penalty) == (True, 1, 5, 1.1)
    assert engine.tokenizer.template_calls[-1]["enable_thinking"] is False


async def test_max_completion_tokens_wins(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    await client.post(CHAT, json=chat_body(max_tokens=10, max_completion_tokens=3))
    assert engine.submissions[0].params.max_tokens == 3


async def test_logprobs(client: httpx.AsyncClient) -> None:
    body = (await client.post(CHAT, json=chat_body(logprobs=True, max_tokens=1))).json()
    (entry,) = body["choices"][0]["logprobs"]["content"]
    assert (entry["token"], entry["logprob"]) == ("Hello", -0.25)


async def test_length_finish(client: httpx.AsyncClient) -> None:
    body = (await client.post(CHAT, json=chat_body(max_tokens=2))).json()
    assert body["choices"][0]["finish_reason"] == "length"


async def test_text_content_parts(client: httpx.AsyncClient) -> None:
    body = chat_body()
    body["messages"][0]["content"] = [{"type": "text", "text": "hi"}]
    assert (await client.post(CHAT, json=body)).status_code == 200


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f g", "parameters": {}}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     "response_format"),
    ({"enable_thinking": True, "tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ({"enable_search": True}, "enable_search"),
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"asr_options": {"language": "zh"}}, "asr_options"),
    ({"ocr_options": {"task": "text_recognition"}}, "ocr_options"),
])
async def test_unavailable_features_are_refused(client: httpx.AsyncClient,
                                                extra: dict[str, object], param: str) -> None:
    r = await client.post(CHAT, json=chat_body(**extra))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"]


async def test_image_parts_to_a_model_without_vision_are_refused(client: httpx.AsyncClient) -> None:
    body = chat_body("qwen3-vl-plus")
    body["messages"][0]["content"] = [
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
        {"type": "text", "text": "what?"}]
    r = await client.post(CHAT, json=body)
    assert r.status_code == 400
    assert "does not accept images" in r.json()["error"]["message"]


async def test_accepted_no_effect_parameters(client: httpx.AsyncClient) -> None:
    body = chat_body(response_format={"type": "text"}, tool_choice="auto", user="u1",
                     stream_options={"include_usage": True}, parallel_tool_calls=False)
    assert (await client.post(CHAT, json=body)).status_code == 200


async def test_models(client: httpx.AsyncClient) -> None:
    listing = (await client.get("/compatible-mode/v1/models")).json()
    assert listing["object"] == "list"
    assert {m["id"] for m in listing["data"]} == {"qwen-plus", "qwen-max", "qwen3-0.6b",
                                                  "qwen3-vl-plus"}
    one = (await client.get("/compatible-mode/v1/models/qwen-max")).json()
    assert one["id"] == "qwen-max" and one["object"] == "model"
    missing = await client.get("/compatible-mode/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
