"""A property-based fuzzer over both APIs' request shapes (FakeEngine behind the real app):
never a 5xx, and every 4xx in DashScope's envelope with the request id. The schema the
server publishes at /openapi.json names the same bodies, for schemathesis and the like."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashserve.app import create_app
from dashserve.config import Settings
from tests.reliability.conftest import CHAT, LONG, NATIVE
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate

EXAMPLES = 2000 if LONG else 120
MODELS = ("qwen-plus", "qwen3-0.6b")
APP = create_app(Settings(max_body_bytes=1 << 20, partial_response_timeout_s=5),
                 {name: FakeEngine() for name in MODELS}, RecordingGate())

texts = st.one_of(st.text(max_size=30), st.sampled_from(
    ["<|im_start|>system", "<|im_end|>", "<think>", "</tool_call>", "json", "\ud800", ""]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=False), texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
roles = st.one_of(st.sampled_from(["system", "user", "assistant", "tool"]), texts)
parts = st.one_of(st.fixed_dictionaries({"text": texts}),
                  st.fixed_dictionaries({"type": st.just("text"), "text": texts}),
                  st.fixed_dictionaries({"image": texts}), json_values)
contents = st.one_of(texts, st.lists(parts, max_size=3), json_values)
tool = st.fixed_dictionaries({"type": st.one_of(st.just("function"), texts), "function":
                              st.fixed_dictionaries({"name": texts, "parameters": json_values})})
message = st.fixed_dictionaries({"role": roles, "content": contents}, optional={
    "partial": st.booleans(), "name": texts, "tool_call_id": texts,
    "tool_calls": st.lists(json_values, max_size=2), "reasoning_content": texts})
KNOBS = {
    "temperature": st.one_of(st.floats(-1, 3), json_values),
    "top_p": st.one_of(st.floats(-0.5, 1.5), json_values),
    "top_k": st.one_of(st.integers(-5, 200), json_values),
    "max_tokens": st.one_of(st.integers(-5, 100), json_values),
    "seed": st.one_of(st.integers(-5, 2**33), json_values),
    "n": st.one_of(st.integers(-1, 6), json_values),
    "stop": st.one_of(texts, st.lists(st.one_of(texts, st.integers(-5, 200000)), max_size=3),
                      json_values),
    "presence_penalty": st.floats(-3, 3), "repetition_penalty": st.floats(-1, 3),
    "result_format": st.one_of(st.sampled_from(["text", "message"]), json_values),
    "incremental_output": st.one_of(st.booleans(), json_values),
    "enable_thinking": st.one_of(st.booleans(), json_values),
    "thinking_budget": st.one_of(st.integers(-5, 100), json_values),
    "logprobs": st.one_of(st.booleans(), json_values),
    "top_logprobs": st.one_of(st.integers(-2, 8), json_values),
    "response_format": st.one_of(st.sampled_from([{"type": "json_object"}, {"type": "text"}]),
                                 json_values),
    "tools": st.one_of(st.lists(tool, max_size=2), json_values),
    "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required"]), json_values),
    "stream": st.booleans(),
    "stream_options": json_values,
}
knobs = st.dictionaries(st.sampled_from(sorted(KNOBS)), st.none()).flatmap(
    lambda chosen: st.fixed_dictionaries({k: KNOBS[k] for k in chosen}))
models = st.one_of(st.sampled_from(MODELS), texts, json_values)
native = st.fixed_dictionaries({"model": models, "input": st.one_of(
    st.fixed_dictionaries({"messages": st.lists(message, max_size=4)}),
    st.fixed_dictionaries({"prompt": texts}), json_values), "parameters": knobs})
chat = st.builds(lambda base, extra: {**extra, **base}, st.fixed_dictionaries(
    {"model": models, "messages": st.one_of(st.lists(message, max_size=4), json_values)}), knobs)
requests = st.one_of(st.tuples(st.just(NATIVE), native, st.booleans()),
                     st.tuples(st.just(CHAT), chat, st.just(False)))


async def _send(path: str, body: Any, sse: bool) -> httpx.Response:
    headers = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    if sse:
        headers["X-DashScope-SSE"] = "enable"
    transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as c:
        return await c.post(path, content=json.dumps(body).encode(), headers=headers)


def _check(path: str, response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code == 200:
        return
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    if path == CHAT:
        assert set(body["error"]) == {"message", "type", "param", "code"}
    else:
        assert set(body) == {"code", "message", "request_id"}
        assert body["code"] and body["message"]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(requests)
def test_no_request_shape_gets_a_5xx(request: tuple[str, Any, bool]) -> None:
    path, body, sse = request
    _check(path, asyncio.run(_send(path, body, sse)))


def test_the_openapi_schema_names_both_apis_bodies() -> None:
    async def fetch() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            response = await c.get("/openapi.json")
            assert response.status_code == 200
            return response.json()  # type: ignore[no-any-return]

    spec = asyncio.run(fetch())
    assert spec["openapi"].startswith("3.")
    for path, model in ((NATIVE, "NativeRequest"), (CHAT, "ChatCompletionRequest")):
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert ref["schema"]["$ref"] == f"#/components/schemas/{model}"
        assert "properties" in spec["components"]["schemas"][model]
    assert "/health" in spec["paths"]
