"""Tools, structured output, thinking and partial mode on both APIs (FakeEngine, HTTP shapes)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.api.conftest import CHAT, NAMES, NATIVE, chat_body, native_body
from tests.utils.fake_engine import FakeEngine

THINK = ("<think>", "\n", "hmm", "\n", "</think>", "\n\n", "hello")
CALL = ("<tool_call>", "\n", '{"name": "get_weather", ', '"arguments": {"city": ',
        '"杭州"}}', "\n", "</tool_call>")
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}
SSE = {"X-DashScope-SSE": "enable"}


@pytest.fixture
async def scripted(make_client: Callable[..., httpx.AsyncClient]
                   ) -> AsyncIterator[Callable[[tuple[str, ...]], Any]]:
    clients: list[httpx.AsyncClient] = []

    def factory(script: tuple[str, ...]) -> tuple[httpx.AsyncClient, FakeEngine]:
        engine = FakeEngine(script=script)
        c = make_client({name: engine for name in NAMES})
        clients.append(c)
        return c, engine

    yield factory
    for c in clients:
        await c.aclose()


def events(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("data:") and "[DONE]" not in line:
            out.append(json.loads(line[5:]))
    return out


async def test_native_thinking_split_non_stream_and_stream(scripted: Any) -> None:
    client, engine = scripted(THINK[1:])  # the prompt opened the block
    r = await client.post(NATIVE, json=native_body(result_format="message",
                                                   enable_thinking=True, thinking_budget=5))
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter"  # stream only
    assert "enable_thinking" in r.json()["message"]
    r = await client.post(NATIVE, headers=SSE, json=native_body(
        result_format="message", enable_thinking=True, thinking_budget=5, incremental_output=True))
    msgs = [e["output"]["choices"][0]["message"] for e in events(r.text)]
    assert "".join(m.get("reasoning_content", "") for m in msgs) == "hmm"
    sub = engine.submissions[-1]
    assert sub.params.starts_in_thinking and sub.params.thinking_budget == 5
    assert engine.tokenizer.decode(sub.prompt_token_ids).endswith("<think>\n")
    r = await client.post(NATIVE, headers=SSE, json=native_body(
        result_format="message", enable_thinking=True, incremental_output=True))
    msgs = [e["output"]["choices"][0]["message"] for e in events(r.text)]
    assert "".join(m.get("reasoning_content", "") for m in msgs) == "hmm"
    assert "".join(m["content"] for m in msgs) == "hello"
    assert all("<think>" not in m["content"] for m in msgs)


async def test_thinking_stream_needs_incremental_output(scripted: Any) -> None:
    client, _ = scripted(THINK)
    r = await client.post(NATIVE, headers=SSE, json=native_body(
        result_format="message", enable_thinking=True, incremental_output=False))
    assert r.status_code == 400 and "incremental_output" in r.json()["message"]


async def test_compat_thinking_deltas(scripted: Any) -> None:
    client, _ = scripted(THINK[1:])
    r = await client.post(CHAT, json=chat_body(enable_thinking=True, stream=True))
    deltas = [e["choices"][0]["delta"] for e in events(r.text) if e["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "hmm"
    assert "".join(d.get("content") or "" for d in deltas) == "hello"


async def test_native_tool_call_non_stream_and_stream(scripted: Any) -> None:
    client, engine = scripted(CALL)
    r = await client.post(NATIVE, json=native_body(result_format="message", tools=[WEATHER], n=2))
    choice = r.json()["output"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == ""
    call = choice["message"]["tool_calls"][0]
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "杭州"}
    assert engine.submissions[-1].params.n == 1
    assert engine.tokenizer.template_calls[-1]["tools"][0]["function"]["name"] == "get_weather"
    r = await client.post(NATIVE, headers=SSE, json=native_body(
        result_format="message", tools=[WEATHER], incremental_output=True))
    chunks = events(r.text)
    frags = [f for e in chunks for f in e["output"]["choices"][0]["message"].get("tool_calls", [])]
    assert [f["index"] for f in frags] == [0] * len(frags)
    assert "id" in frags[0] and all("id" not in f and "name" not in f["function"]
                                    for f in frags[1:])
    args = "".join(f["function"]["arguments"] for f in frags)
    assert json.loads(args) == {"city": "杭州"}
    assert chunks[-1]["output"]["choices"][0]["finish_reason"] == "tool_calls"


async def test_native_cumulative_stream_holds_whole_calls(scripted: Any) -> None:
    client, _ = scripted(CALL)
    r = await client.post(NATIVE, headers=SSE, json=native_body(
        result_format="message", tools=[WEATHER], incremental_output=False))
    last = events(r.text)[-1]["output"]["choices"][0]["message"]
    assert json.loads(last["tool_calls"][0]["function"]["arguments"]) == {"city": "杭州"}


async def test_compat_tool_calls_and_choice_none(scripted: Any) -> None:
    client, engine = scripted(CALL)
    r = await client.post(CHAT, json=chat_body(tools=[WEATHER]))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    r = await client.post(CHAT, json=chat_body(tools=[WEATHER], stream=True))
    frags = [f for e in events(r.text) if e["choices"]
             for f in e["choices"][0]["delta"].get("tool_calls", [])]
    assert frags[0]["id"] and frags[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(f["function"]["arguments"] for f in frags)) == {"city": "杭州"}
    r = await client.post(CHAT, json=chat_body(tools=[WEATHER], tool_choice="none"))
    message = r.json()["choices"][0]["message"]
    assert "tool_calls" not in message and "<tool_call>" in message["content"]
    assert engine.tokenizer.template_calls[-1]["tools"] is None


async def test_forced_tool_choice_and_response_format_set_grammar(scripted: Any) -> None:
    client, engine = scripted(CALL)
    forced = {"type": "function", "function": {"name": "get_weather"}}
    r = await client.post(CHAT, json=chat_body(tools=[WEATHER], tool_choice=forced))
    assert r.status_code == 200
    assert "get_weather" in (engine.submissions[-1].params.structured.grammar or "")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    r = await client.post(CHAT, json=chat_body(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert engine.submissions[-1].params.structured.json_schema == schema
    r = await client.post(NATIVE, json=native_body(content="answer in JSON",
                                                   response_format={"type": "json_object"}))
    assert r.status_code == 200 and engine.submissions[-1].params.structured.json_object


async def test_partial_thinking_refused(scripted: Any) -> None:
    client, _ = scripted(THINK)
    body = {"model": "qwen-plus", "enable_thinking": True, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "a", "partial": True}]}
    r = await client.post(CHAT, json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
