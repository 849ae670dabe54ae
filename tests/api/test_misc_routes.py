"""Health, tokenizer and native model listing."""

from __future__ import annotations

import httpx

from dashserve.contracts.chat_format import THINK_START
from tests.api.conftest import native_body
from tests.utils.fake_engine import FakeEngine


async def test_health_ready(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"Authorization": ""})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and "qwen-plus" in body["models"]


async def test_tokenizer_counts_like_generation(client: httpx.AsyncClient,
                                                engine: FakeEngine) -> None:
    body = {"model": "qwen-plus",
            "input": {"messages": [{"role": "user", "content": "hi"}]}, "parameters": {}}
    r = await client.post("/api/v1/tokenizer", json=body)
    assert r.status_code == 200
    out = r.json()
    ids = out["output"]["token_ids"]
    assert out["usage"] == {"input_tokens": len(ids)}
    assert len(out["output"]["tokens"]) == len(ids)
    assert out["output"]["tokens"][:2] == ["<|im_start|>", "u"]
    gen = await client.post("/api/v1/services/aigc/text-generation/generation",
                            json=native_body())
    assert gen.json()["usage"]["input_tokens"] == len(ids)
    prompt = await client.post("/api/v1/tokenizer",
                               json={"model": "qwen-plus", "input": {"prompt": "hi"}})
    assert prompt.json()["output"]["token_ids"] == ids


async def test_tokenizer_counts_tools_and_thinking_as_generation_bills(
        client: httpx.AsyncClient, engine: FakeEngine) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "weather in Hangzhou?"}]
    plain = await client.post("/api/v1/tokenizer", json={
        "model": "qwen-plus", "input": {"messages": messages}})
    with_tools = await client.post("/api/v1/tokenizer", json={
        "model": "qwen-plus", "input": {"messages": messages},
        "parameters": {"tools": tools, "result_format": "message"}})
    gen = await client.post("/api/v1/services/aigc/text-generation/generation", json={
        "model": "qwen-plus", "input": {"messages": messages},
        "parameters": {"tools": tools, "result_format": "message"}})
    assert gen.status_code == 200, gen.text
    billed = gen.json()["usage"]["input_tokens"]
    assert with_tools.json()["usage"]["input_tokens"] == billed
    calls = engine.tokenizer.template_calls
    assert [c["tools"] is not None for c in calls[-3:]] == [False, True, True]
    assert calls[-2]["tools"] == calls[-1]["tools"]  # the tokenizer rendered what was billed
    assert plain.json()["usage"]["input_tokens"] > 0
    thinking_body = {"model": "qwen-plus", "input": {"messages": messages},
                     "parameters": {"enable_thinking": True, "result_format": "message",
                                    "incremental_output": True}}
    thinking = await client.post("/api/v1/tokenizer", json=thinking_body)
    assert thinking.status_code == 200, thinking.text
    assert thinking.json()["output"]["tokens"][-2:] == [THINK_START, "\n"]  # opened for the model
    gen = await client.post("/api/v1/services/aigc/text-generation/generation",
                            json=thinking_body, headers={"X-DashScope-SSE": "enable"})
    assert gen.status_code == 200
    assert engine.submissions[-1].prompt_token_ids == thinking.json()["output"]["token_ids"]


async def test_tokenizer_needs_a_known_model(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/tokenizer", json={"model": "x", "input": {"prompt": "a"}})
    assert r.status_code == 404


async def test_native_models(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/models", params={"page_no": 1, "page_size": 2})
    out = r.json()["output"]
    assert (out["page_no"], out["page_size"], out["total"]) == (1, 2, 4)
    assert [m["model"] for m in out["models"]] == ["qwen-max", "qwen-plus"]
    one = (await client.get("/api/v1/models", params={"model": "qwen-plus"})).json()
    assert [m["model"] for m in one["output"]["models"]] == ["qwen-plus"]
    assert "request_id" in r.json()


async def test_models_need_a_key(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/models", headers={"Authorization": ""})
    assert r.status_code == 401
