"""Structured output, forced tool calls, thinking and partial mode with the real engine
(qwen3-tiny, random weights) behind a live server, driven by the real SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashserve.engine.async_engine import AsyncEngine
from tests.integration.conftest import API_KEY, LiveServer, start_server

MODEL = "qwen3-0.6b"
SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
     "additionalProperties": False},
    {"type": "object", "properties": {"ok": {"type": "boolean"},
                                      "tag": {"enum": ["a", "b", "c"]}},
     "required": ["ok", "tag"], "additionalProperties": False},
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5}},
     "required": ["name"], "additionalProperties": False},
    {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"},
                                             "maxItems": 2}},
     "required": ["xs"], "additionalProperties": False},
    {"type": "object", "properties": {"inner": {
        "type": "object", "properties": {"v": {"type": "number"}}, "required": ["v"],
        "additionalProperties": False}}, "required": ["inner"], "additionalProperties": False},
]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "weather of a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 6},
        "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"],
        "additionalProperties": False}}}
FORCED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def real(qwen3_tiny_dir: Path) -> Iterator[LiveServer]:
    engine = AsyncEngine.from_pretrained(str(qwen3_tiny_dir), dtype="fp32", max_model_len=1024)
    server = start_server({MODEL: engine})  # type: ignore[dict-item]
    yield server
    server.stop()


def _openai(real: LiveServer) -> Any:
    import openai

    return openai.OpenAI(api_key=API_KEY, base_url=real.compat_url, max_retries=0)


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    """A small validator for the keywords the test schemas use."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return (isinstance(value, dict) and set(schema.get("required", [])) <= set(value)
                and set(value) <= set(props)
                and all(_valid(v, props[k]) for k, v in value.items()))
    if kind == "array":
        return (isinstance(value, list) and len(value) <= schema.get("maxItems", 10**9)
                and all(_valid(v, schema["items"]) for v in value))
    if kind == "string":
        return isinstance(value, str) and len(value) <= schema.get("maxLength", 10**9)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return kind != "boolean" or isinstance(value, bool)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_strict_json_schema_with_openai_sdk(real: LiveServer, schema: dict[str, Any]) -> None:
    out = _openai(real).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "give me data"}], max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {
            "name": "data", "strict": True, "schema": schema}}, seed=1)
    choice = out.choices[0]
    assert choice.finish_reason == "stop", choice
    assert _valid(json.loads(choice.message.content), schema)


def test_forced_tool_call_with_dashscope_sdk(real: LiveServer) -> None:
    import dashscope

    r = dashscope.Generation.call(
        model=MODEL, api_key=API_KEY, base_address=real.native_url,
        messages=[{"role": "user", "content": "weather in Hangzhou?"}], tools=[WEATHER],
        tool_choice=FORCED, result_format="message", max_tokens=120, seed=2)
    assert r.status_code == 200, r
    choice = r.output.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call["function"]["name"] == "get_weather" and call["id"].startswith("call_")
    args = json.loads(call["function"]["arguments"])
    assert _valid(args, WEATHER["function"]["parameters"])


def test_streamed_forced_tool_call_rebuilt_by_openai_helper(real: LiveServer) -> None:
    with _openai(real).chat.completions.stream(
            model=MODEL, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER],
            tool_choice=FORCED, max_tokens=120, seed=3) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert _valid(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_thinking_budget_gives_reasoning(real: LiveServer) -> None:
    reasoning, content, usage = "", "", None
    for chunk in _openai(real).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "think"}], max_tokens=30, seed=4,
            stream=True, stream_options={"include_usage": True},
            extra_body={"enable_thinking": True, "thinking_budget": 8}):
        if chunk.choices:
            reasoning += getattr(chunk.choices[0].delta, "reasoning_content", None) or ""
            content += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert reasoning and "<think>" not in content
    assert usage is not None
    assert 1 <= usage.completion_tokens_details.reasoning_tokens <= 8


def test_max_tokens_bounds_the_answer_not_the_reasoning(real: LiveServer) -> None:
    """A thinking model's chain of thought is not cut by max_tokens (seeds 002, 003)."""
    reasoning, content, usage, finish = "", "", None, None
    for chunk in _openai(real).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "think"}], max_tokens=5, seed=4,
            stream=True, stream_options={"include_usage": True},
            extra_body={"enable_thinking": True, "thinking_budget": 8}):
        if chunk.choices:
            reasoning += getattr(chunk.choices[0].delta, "reasoning_content", None) or ""
            content += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert usage is not None and reasoning
    details = usage.completion_tokens_details
    # the reasoning ran to its budget, then the answer to max_tokens
    assert finish == "length" and content and details.reasoning_tokens == 8
    assert usage.completion_tokens - details.reasoning_tokens >= 5


def test_partial_continuation(real: LiveServer) -> None:
    import dashscope

    r = dashscope.Generation.call(
        model=MODEL, api_key=API_KEY, base_address=real.native_url, result_format="message",
        messages=[{"role": "user", "content": "count"},
                  {"role": "assistant", "content": "one two", "partial": True}],
        max_tokens=5, seed=5)
    assert r.status_code == 200, r
    assert r.usage.output_tokens <= 5 and r.output.choices[0].message.content is not None


@pytest.mark.parametrize("stream", [False, True])
def test_schema_the_engine_cannot_compile_is_a_400(real: LiveServer, stream: bool) -> None:
    import openai

    bad = {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}
    with pytest.raises(openai.BadRequestError) as info:
        _openai(real).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=5,
            stream=stream, response_format={"type": "json_schema", "json_schema": {
                "name": "bad", "schema": bad}})
    assert info.value.status_code == 400
    assert real.gate.records[-1].status_code == 400


def _library_schemas() -> dict[str, dict[str, Any]]:
    """The grammar tests' schemas, less the one whose only string is unbounded (an email):
    random weights follow the grammar but need not ever close such a string."""
    from tests.sampling.test_structured import SCHEMAS as LIBRARY_SCHEMAS

    return {k: v for k, v in LIBRARY_SCHEMAS.items() if k != "email_format"}


@pytest.mark.parametrize("name", list(_library_schemas()))
def test_strict_json_schema_catalogue_through_openai_sdk(real: LiveServer, name: str) -> None:
    """Every schema of the grammar tests, end to end: SDK → server → engine → valid JSON."""
    from tests.sampling.test_structured import validate

    schema = _library_schemas()[name]
    out = _openai(real).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "give me data"}], max_tokens=400,
        response_format={"type": "json_schema", "json_schema": {
            "name": "data", "strict": True, "schema": schema}}, seed=7)
    choice = out.choices[0]
    assert choice.finish_reason == "stop", (name, choice.message.content)
    validate(json.loads(choice.message.content), schema)


def test_streamed_tool_call_merged_by_dashscope_sdk_equals_non_stream(real: LiveServer) -> None:
    """The 1.x SDK turns incremental_output=False into deltas on the wire and merges them;
    the merged call must equal the non-stream answer for the same seed."""
    import dashscope

    kwargs = dict(model=MODEL, api_key=API_KEY, base_address=real.native_url,
                  messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER],
                  tool_choice=FORCED, result_format="message", max_tokens=120, seed=6)
    whole = dashscope.Generation.call(**kwargs)
    chunks = list(dashscope.Generation.call(stream=True, incremental_output=False, **kwargs))
    assert all(c.status_code == 200 for c in chunks), chunks[-1]
    merged = chunks[-1].output.choices[0]
    assert merged.finish_reason == "tool_calls"
    a, b = merged.message.tool_calls[0], whole.output.choices[0].message.tool_calls[0]
    assert a["function"] == b["function"]


def test_streamed_reasoning_rebuilt_by_both_sdks_agree(real: LiveServer) -> None:
    """Thinking is stream-only: the SDK-merged native stream and the compat deltas agree,
    and a non-stream call is refused as DashScope refuses it."""
    import dashscope

    body = dict(messages=[{"role": "user", "content": "think"}], max_tokens=24, seed=8)
    extra = {"enable_thinking": True, "thinking_budget": 6}
    with pytest.raises(Exception) as refused:
        _openai(real).chat.completions.create(model=MODEL, extra_body=extra, **body)
    assert getattr(refused.value, "status_code", None) == 400
    reasoning, content = "", ""
    for chunk in _openai(real).chat.completions.create(model=MODEL, extra_body=extra,
                                                        stream=True, **body):
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning += getattr(delta, "reasoning_content", None) or ""
            content += delta.content or ""
    assert reasoning
    native = list(dashscope.Generation.call(
        model=MODEL, api_key=API_KEY, base_address=real.native_url, stream=True,
        incremental_output=True, result_format="message", **body, **extra))
    assert all(c.status_code == 200 for c in native), native[-1]
    native_reasoning = "".join(c.output.choices[0].message.get("reasoning_content") or ""
                               for c in native)
    assert native_reasoning == reasoning
    merged = list(dashscope.Generation.call(
        model=MODEL, api_key=API_KEY, base_address=real.native_url, stream=True,
        incremental_output=False, result_format="message", **body, **extra))
    final = merged[-1].output.choices[0].message
    assert final.get("reasoning_content") == reasoning and (final.get("content") or "") == content


def test_tokenizer_counts_tools_as_billed(real: LiveServer) -> None:
    """POST /api/v1/tokenizer plans the request as generation does: tools are rendered."""
    import httpx

    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": MODEL, "input": {"messages": [{"role": "user", "content": "weather?"}]},
            "parameters": {"result_format": "message", "tools": [WEATHER], "max_tokens": 2}}
    counted = httpx.post(f"{real.native_url}/tokenizer", json=body, headers=headers).json()
    billed = httpx.post(f"{real.native_url}/services/aigc/text-generation/generation",
                        json=body, headers=headers).json()
    body["parameters"].pop("tools")
    plain = httpx.post(f"{real.native_url}/tokenizer", json=body, headers=headers).json()
    assert counted["usage"]["input_tokens"] == billed["usage"]["input_tokens"]
    assert counted["usage"]["input_tokens"] > plain["usage"]["input_tokens"] + 50
