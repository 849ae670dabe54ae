"""The hostile-input catalogue: every bad request is a 4xx in DashScope's envelope with a
request id, never a 500; a huge prompt does not stall anyone else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.tokenizer import Tokenizer
from tests.reliability.conftest import CHAT, NATIVE
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate

AUTH = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}


def deep(levels: int) -> str:
    return '{"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}], "x": ' + \
        "[" * levels + "]" * levels + "}"


def envelope_ok(response: httpx.Response, path: str) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    if path == CHAT:
        assert set(body["error"]) == {"message", "type", "param", "code"}
    else:
        assert set(body) == {"code", "message", "request_id"}


def native_raw(messages: str, model: str = '"qwen-plus"') -> str:
    return f'{{"model": {model}, "input": {{"messages": {messages}}}}}'


def chat_raw(messages: str, model: str = '"qwen-plus"') -> str:
    return f'{{"model": {model}, "messages": {messages}}}'


@pytest.fixture
async def client(tokenizer: Tokenizer) -> AsyncIterator[httpx.AsyncClient]:
    big = FakeEngine()
    big.tokenizer = tokenizer  # the real tokenizer: prompts cost what they cost
    tokenizer.prepare_for_serving()  # as AsyncEngine does while the server loads
    engines: dict[str, Any] = {"qwen-plus": FakeEngine(), "qwen-max": big}
    app = create_app(Settings(max_body_bytes=64 << 20), engines, RecordingGate())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as c:
        yield c


TOOL_JSON = '{"type": "function", "function": {"name": "NAME", "parameters": {"type": "object"}}}'
CATALOGUE = {
    "json nested 1,000 deep": lambda path: deep(1000),
    "json nested 100,000 deep": lambda path: deep(100_000),
    "lone surrogate in the text": lambda path: (native_raw if path == NATIVE else chat_raw)(
        '[{"role": "user", "content": "a\\ud800b"}]'),
    "lone surrogate in a content part": lambda path: (native_raw if path == NATIVE
                                                      else chat_raw)(
        '[{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]'),
    "lone surrogate in the model": lambda path: (native_raw if path == NATIVE else chat_raw)(
        '[{"role": "user", "content": "hi"}]', model='"\\ud800"'),
    "lone surrogate in a key": lambda path: '{"\\ud800": 1, "model": "qwen-plus"}',
    "10,000 tools": lambda path: (
        '{"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}], "tools": ['
        + ",".join(TOOL_JSON.replace("NAME", f"f{i}") for i in range(10_000)) + "]}"
        if path == CHAT else
        native_raw('[{"role": "user", "content": "hi"}]')[:-1]
        + ', "parameters": {"result_format": "message", "tools": ['
        + ",".join(TOOL_JSON.replace("NAME", f"f{i}") for i in range(10_000)) + "]}}"),
    "5,000 messages": lambda path: (native_raw if path == NATIVE else chat_raw)(
        "[" + ",".join('{"role": "user", "content": "hi"}' for _ in range(5000)) + "]"),
    "not an object": lambda path: "[1, 2, 3]",
    "not JSON": lambda path: "{'model': 1}",
    "invalid UTF-8": lambda path: b'{"model": "\xff\xfe"}',
}


@pytest.mark.parametrize("path", [NATIVE, CHAT])
@pytest.mark.parametrize("case", sorted(CATALOGUE))
async def test_hostile_bodies_get_a_4xx_envelope(client: httpx.AsyncClient, path: str,
                                                 case: str) -> None:
    body = CATALOGUE[case](path)
    content = body if isinstance(body, bytes) else body.encode()
    envelope_ok(await client.post(path, content=content, headers=AUTH), path)


@pytest.mark.parametrize("repeats", [
    120_000,  # 1.9 M characters: more than the context can hold whatever the tokens
    25_000,  # 400 k characters: tokenized (on a prompt thread), then refused as too long
])
async def test_a_huge_prompt_does_not_stall_a_small_request(client: httpx.AsyncClient,
                                                            repeats: int) -> None:
    huge = {"model": "qwen-max", "messages": [{"role": "user",
                                               "content": "hello world, 你好 " * repeats}]}
    big = asyncio.ensure_future(client.post(CHAT, headers=AUTH, json=huge))
    small = {"model": "qwen-plus", "max_tokens": 2,
             "messages": [{"role": "user", "content": "hi"}]}
    latencies: list[float] = []
    await asyncio.sleep(0.01)
    while not big.done() or len(latencies) < 3:
        started = time.perf_counter()
        r = await client.post(CHAT, headers=AUTH, json=small)
        latencies.append(time.perf_counter() - started)
        assert r.status_code == 200
        await asyncio.sleep(0.01)
    answer = await big
    assert answer.status_code == 400, answer.text[:200]  # longer than the context
    assert ("at least" in answer.json()["error"]["message"]) == (repeats > 100_000)
    assert max(latencies) < 0.1, latencies
