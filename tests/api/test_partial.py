"""The non-stream cut-off: what was generated so far, x-dashscope-partialresponse, null finish."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.api.conftest import CHAT, NATIVE, chat_body, native_body
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate


async def test_native_partial_response(make_client: Callable[..., httpx.AsyncClient],
                                       gate: RecordingGate) -> None:
    engine = FakeEngine(token_delay_s=0.1)
    async with make_client({"qwen-plus": engine}, partial_response_timeout_s=0.25) as c:
        r = await c.post(NATIVE, json=native_body(result_format="message"))
    assert r.status_code == 200
    assert r.headers["x-dashscope-partialresponse"] == "true"
    choice = r.json()["output"]["choices"][0]
    assert choice["finish_reason"] is None
    content = choice["message"]["content"]
    assert content and "Hello from dashserve!".startswith(content)
    assert len(content) < len("Hello from dashserve!")
    rid = r.json()["request_id"]
    assert engine.aborted == [rid] and not engine.active
    (record,) = gate.records
    assert (record.status_code, record.finish_reason) == (200, None)
    assert record.output_tokens == r.json()["usage"]["output_tokens"] > 0


async def test_openai_partial_response(make_client: Callable[..., httpx.AsyncClient]) -> None:
    engine = FakeEngine(token_delay_s=0.1)
    async with make_client({"qwen-plus": engine}, partial_response_timeout_s=0.15) as c:
        r = await c.post(CHAT, json=chat_body())
    assert r.headers["x-dashscope-partialresponse"] == "true"
    assert r.json()["choices"][0]["finish_reason"] is None


async def test_fast_answers_are_complete(make_client: Callable[..., httpx.AsyncClient]) -> None:
    async with make_client({"qwen-plus": FakeEngine()}, partial_response_timeout_s=5) as c:
        r = await c.post(NATIVE, json=native_body())
    assert "x-dashscope-partialresponse" not in r.headers
    assert r.json()["output"]["finish_reason"] == "stop"
