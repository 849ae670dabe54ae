"""Errors as protocol.md §8 and §9.4 describe: status, code, message naming the parameter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from dashserve.errors import QuotaExhausted
from tests.api.conftest import CHAT, NATIVE, chat_body, native_body
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate
from tests.utils.waiting import until


def assert_native_error(r: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"code", "message", "request_id"}
    assert body["code"] == code and body["request_id"] == r.headers["x-request-id"]
    return body


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, content=b'{"model": ',
                          headers={"content-type": "application/json"})
    assert "not valid JSON" in assert_native_error(r, 400, "InvalidParameter")["message"]


async def test_body_must_be_an_object(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json=[1, 2])
    assert_native_error(r, 400, "InvalidParameter")


async def test_missing_model(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json={"input": {"prompt": "hi"}})
    assert "'model'" in assert_native_error(r, 400, "InvalidParameter")["message"]


async def test_missing_input(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json={"model": "qwen-plus", "input": {}})
    body = assert_native_error(r, 400, "BadRequest.EmptyInput")
    assert "prompt" in body["message"] and "messages" in body["message"]


async def test_wrong_type_names_the_parameter(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json=native_body(temperature="hot"))
    assert "parameters.temperature" in assert_native_error(r, 400, "InvalidParameter")["message"]


@pytest.mark.parametrize(("param", "value"), [
    ("temperature", 2.0), ("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5),
    ("top_k", -1), ("repetition_penalty", 0.0), ("presence_penalty", 2.5), ("seed", -1),
    ("seed", 2**31), ("n", 0), ("n", 5), ("top_logprobs", 6), ("max_tokens", 0),
    ("max_tokens", 10**6), ("max_input_tokens", 0), ("thinking_budget", 0),
])
async def test_out_of_range(client: httpx.AsyncClient, param: str, value: float) -> None:
    r = await client.post(NATIVE, json=native_body(result_format="message", **{param: value}))
    body = assert_native_error(r, 400, "InvalidParameter")
    assert param in body["message"] and "Range of" in body["message"]
    compat = await client.post(CHAT, json=chat_body(**{param: value}))
    assert compat.status_code == 400 and compat.json()["error"]["param"] == param


async def test_mixed_stop_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json=native_body(stop=["hi", 5]))
    assert "stop" in assert_native_error(r, 400, "InvalidParameter")["message"]


async def test_text_format_needs_single_choice(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json=native_body(n=2, result_format="text"))
    assert "result_format" in assert_native_error(r, 400, "InvalidParameter")["message"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic sk-test"}])
async def test_bad_key(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    client.headers.pop("Authorization")
    r = await client.post(NATIVE, json=native_body(), headers=headers)
    assert_native_error(r, 401, "InvalidApiKey")
    compat = await client.post(CHAT, json=chat_body(), headers=headers)
    assert compat.status_code == 401
    assert compat.json()["error"]["code"] == "invalid_api_key"


async def test_key_is_checked_before_the_body(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, content=b"{", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


async def test_unknown_model(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json=native_body("qwen-nope"))
    body = assert_native_error(r, 404, "ModelNotFound")
    assert "qwen-nope" in body["message"]
    compat = await client.post(CHAT, json=chat_body("qwen-nope"))
    assert compat.status_code == 404
    assert compat.json()["error"]["code"] == "model_not_found"


async def test_prompt_too_long(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json=native_body(content="x" * 5000))
    assert "input length" in assert_native_error(r, 400, "InvalidParameter")["message"]


async def test_max_input_tokens_is_honoured(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json=native_body(content="x" * 100, max_input_tokens=50))
    assert "[1, 50]" in assert_native_error(r, 400, "InvalidParameter")["message"]
    ok = await client.post(NATIVE, json=native_body(content="x" * 100, max_input_tokens=200))
    assert ok.status_code == 200


async def test_engine_failure(make_client: Callable[..., httpx.AsyncClient],
                              gate: RecordingGate) -> None:
    async with make_client({"qwen-plus": FakeEngine(fail_after=1)}) as c:
        r = await c.post(NATIVE, json=native_body())
        assert_native_error(r, 500, "InternalError")
        compat = await c.post(CHAT, json=chat_body())
    assert compat.status_code == 500 and compat.json()["error"]["type"] == "internal_error"
    assert [rec.status_code for rec in gate.records] == [500, 500]


async def test_server_busy(make_client: Callable[..., httpx.AsyncClient]) -> None:
    engine = FakeEngine(first_token_delay_s=5)
    async with make_client({"qwen-plus": engine}, max_inflight_per_model=1) as c:
        holder = asyncio.create_task(c.post(NATIVE, json=native_body()))
        await until(lambda: engine.active)  # one request holds the engine
        r = await c.post(NATIVE, json=native_body())
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
    assert_native_error(r, 429, "Throttling")
    assert "already running or queued" in r.json()["message"]
    assert [s.request_id for s in engine.submissions] == [engine.submissions[0].request_id]
    assert r.headers["retry-after"] == "1"


async def test_quota_refusal_is_not_retryable(client: httpx.AsyncClient,
                                              gate: RecordingGate) -> None:
    gate.refuse_with = QuotaExhausted()
    r = await client.post(NATIVE, json=native_body())
    assert_native_error(r, 429, "Throttling.AllocationQuota")
    assert r.headers["x-should-retry"] == "false"


async def test_loading_is_503(make_client: Callable[..., httpx.AsyncClient]) -> None:
    async with make_client(None) as c:
        r = await c.post(NATIVE, json=native_body())
        assert_native_error(r, 503, "ModelUnavailable")
        health = await c.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "loading"


async def test_unknown_url(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/services/aigc/nope/generation", json={})
    assert r.status_code == 404 and r.json()["message"] == "url error, please check url"
    compat = await client.get("/compatible-mode/v1/nope")
    assert compat.status_code == 404 and "error" in compat.json()


async def test_payload_too_large(make_client: Callable[..., httpx.AsyncClient],
                                 engine: FakeEngine) -> None:
    async with make_client({"qwen-plus": engine}, max_body_bytes=2048) as c:
        r = await c.post(NATIVE, json=native_body(content="x" * 4000))
    assert_native_error(r, 413, "BadRequest.TooLarge")


@pytest.mark.parametrize("header", [{"X-DashScope-Async": "enable"},
                                    {"X-DashScope-EncryptionKey": "k"},
                                    {"X-DashScope-Plugin": '{"x": {}}'}])
async def test_unavailable_transport_modes(client: httpx.AsyncClient,
                                           header: dict[str, str]) -> None:
    r = await client.post(NATIVE, json=native_body(), headers=header)
    assert_native_error(r, 400, "InvalidParameter")


@pytest.mark.parametrize(("params", "name"), [
    ({"enable_search": True}, "enable_search"),
    ({"ocr_options": {"task": "x"}}, "ocr_options"),
])
async def test_unavailable_features(client: httpx.AsyncClient, params: dict[str, object],
                                    name: str, gate: RecordingGate) -> None:
    r = await client.post(NATIVE, json=native_body(result_format="message", **params))
    body = assert_native_error(r, 400, "InvalidParameter")
    assert "not available" in body["message"]
    assert gate.records == []  # refused before admission: nothing to bill


TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}


@pytest.mark.parametrize(("params", "message"), [
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0]"),
    ({"response_format": {"type": "json_object"}}, "must contain the word 'json'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "name"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
     "not in tools"),
    ({"enable_thinking": True, "tools": [TOOL],
      "tool_choice": {"type": "function", "function": {"name": "f"}}}, "thinking"),
    ({"tools": [TOOL], "result_format": "text"}, "result_format"),
    ({"enable_thinking": True, "result_format": "text"}, "result_format"),
])
async def test_chat_feature_refusals(client: httpx.AsyncClient, params: dict[str, object],
                                     message: str, gate: RecordingGate) -> None:
    params = {"result_format": "message", **params}
    r = await client.post(NATIVE, json=native_body(**params))
    body = assert_native_error(r, 400, "InvalidParameter")
    assert message in body["message"]
    assert gate.records == []  # refused before admission: nothing to bill


async def test_fileid_documents_are_refused(client: httpx.AsyncClient) -> None:
    body = {"model": "qwen-plus", "input": {"messages": [
        {"role": "system", "content": "fileid://file-fe-1"},
        {"role": "user", "content": "summarise"}]}}
    r = await client.post(NATIVE, json=body)
    assert "fileid://" in assert_native_error(r, 400, "InvalidParameter")["message"]


async def test_bad_role(client: httpx.AsyncClient) -> None:
    body = {"model": "qwen-plus", "input": {"messages": [{"role": "robot", "content": "x"}]}}
    r = await client.post(NATIVE, json=body)
    assert "role" in assert_native_error(r, 400, "InvalidParameter")["message"]
