"""Streaming clients against canned server replies: usage, reasoning, [DONE], errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from dashserve.benchmark.client import sse_events, stream_compat, stream_native

MESSAGES = [{"role": "user", "content": "hi"}]


class Canned:
    """An httpx transport answering every request with one body; it keeps what was sent."""

    def __init__(self, body: str, status: int = 200, content_type: str = "text/event-stream"):
        self.body, self.status, self.content_type = body, status, content_type
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, content=self.body.encode(),
                              headers={"content-type": self.content_type})

    def sent(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].content)


async def _compat(canned: Canned, **kw: Any):
    async with httpx.AsyncClient(transport=httpx.MockTransport(canned)) as http:
        return await stream_compat(http, "http://x/v1", "m", MESSAGES, max_tokens=8,
                                   temperature=0.0, **kw)


async def _native(canned: Canned, **kw: Any):
    async with httpx.AsyncClient(transport=httpx.MockTransport(canned)) as http:
        return await stream_native(http, "http://x", "m", MESSAGES, max_tokens=8,
                                   temperature=0.5, **kw)


def _oai(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> str:
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": usage}
    return f"data: {json.dumps(chunk)}\n\n"


def _ds(content: str, out: int, finish: str = "null", event_id: int = 1) -> str:
    data = {"output": {"choices": [{"message": {"role": "assistant", "content": content},
                                    "finish_reason": finish}]},
            "usage": {"input_tokens": 12, "output_tokens": out, "total_tokens": 12 + out,
                      "prompt_tokens_details": {"cached_tokens": 4}}, "request_id": "r"}
    return (f"id:{event_id}\nevent:result\n:HTTP_STATUS/200\n"
            f"data:{json.dumps(data, separators=(',', ':'))}\n\n")


async def test_compat_request_body_headers_and_usage() -> None:
    body = (_oai({"role": "assistant", "content": ""}) + _oai({"content": "He"})
            + _oai({"content": "llo"}) + _oai({}, "length")
            + 'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,'
              '"prompt_tokens_details":{"cached_tokens":2}}}\n\n' + "data: [DONE]\n\n")
    canned = Canned(body)
    r = await _compat(canned, api_key="sk-1", extra_body={"ignore_eos": True, "top_k": 1})
    assert r.ok and r.finish_reason == "length" and r.usage_reported
    assert (r.output_tokens, r.prompt_tokens, r.cached_tokens, r.chunks) == (3, 9, 2, 2)
    assert r.ttft_s is not None and 0 <= r.ttft_s <= r.e2e_s and len(r.itl_s) == 1
    sent = canned.sent()
    assert canned.requests[-1].url == "http://x/v1/chat/completions"
    assert canned.requests[-1].headers["authorization"] == "Bearer sk-1"
    assert sent == {"model": "m", "messages": MESSAGES, "stream": True,
                    "stream_options": {"include_usage": True}, "max_tokens": 8,
                    "temperature": 0.0, "ignore_eos": True, "top_k": 1}


async def test_compat_without_usage_counts_reasoning_and_content_chunks() -> None:
    body = (": ping\n\n" + _oai({"reasoning_content": "think"}) + _oai({"reasoning_content": "ing"})
            + _oai({"content": "A"}, None) + _oai({"content": ""}, "stop") + "data: [DONE]\n\n"
            + _oai({"content": "after done is ignored"}))
    r = await _compat(Canned(body))
    assert r.ok and not r.usage_reported and r.prompt_tokens is None
    assert r.output_tokens == r.chunks == 3 and len(r.itl_s) == 2


async def test_compat_failures() -> None:
    r = await _compat(Canned('{"error":{"message":"bad key"}}', 401, "application/json"))
    assert not r.ok and r.error.startswith("HTTP 401") and "bad key" in r.error
    mid = _oai({"content": "x"}) + 'data: {"error":{"message":"inspection failed"}}\n\n'
    r = await _compat(Canned(mid))
    assert not r.ok and "inspection failed" in r.error
    r = await _compat(Canned(_oai({"content": "x"})))  # cut off: no finish reason
    assert not r.ok and "without a finish reason" in r.error
    r = await _compat(Canned("data: <html>\n\n"))
    assert not r.ok and "not JSON" in r.error


async def test_compat_transport_error_is_a_failure() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        r = await stream_compat(http, "http://x/v1", "m", MESSAGES, max_tokens=1, temperature=0)
    assert not r.ok and r.error.startswith("ConnectError")


async def test_native_request_and_running_usage() -> None:
    body = _ds("He", 1) + _ds("llo wor", 4, event_id=2) + _ds("ld", 5, event_id=3) \
        + _ds("", 6, "length", 4)
    canned = Canned(body)
    r = await _native(canned, api_key="sk-2", extra_body={"enable_thinking": False, "seed": 3})
    assert r.ok and r.finish_reason == "length" and r.usage_reported
    assert (r.output_tokens, r.prompt_tokens, r.cached_tokens, r.chunks) == (6, 12, 4, 3)
    assert len(r.itl_s) == 4  # the second chunk carried 3 tokens: its gap is split in three
    assert r.itl_s[0] == pytest.approx(r.itl_s[1]) == pytest.approx(r.itl_s[2])
    req = canned.requests[-1]
    assert req.url == "http://x/api/v1/services/aigc/text-generation/generation"
    assert req.headers["x-dashscope-sse"] == "enable"
    assert req.headers["authorization"] == "Bearer sk-2"
    assert canned.sent() == {"model": "m", "input": {"messages": MESSAGES}, "parameters": {
        "incremental_output": True, "result_format": "message", "max_tokens": 8,
        "temperature": 0.5, "enable_thinking": False, "seed": 3}}


async def test_native_error_event_and_http_error() -> None:
    err = ('id:2\nevent:error\n:HTTP_STATUS/500\nstatus:500\n'
           'data:{"code":"InternalError","message":"boom","request_id":"r"}\n\n')
    no_details = _ds("a", 1, "stop").replace(',"prompt_tokens_details":{"cached_tokens":4}', "")
    r = await _native(Canned(no_details))
    assert r.ok and r.cached_tokens == 0  # the native API leaves the details out when none
    r = await _native(Canned(_ds("a", 1) + err))
    assert not r.ok and "InternalError" in r.error and r.chunks == 1
    r = await _native(Canned('{"code":"InvalidApiKey","message":"no"}', 401, "application/json"))
    assert not r.ok and r.error.startswith("HTTP 401") and "InvalidApiKey" in r.error


async def test_sse_parser_joins_data_lines_and_skips_comments() -> None:
    body = ":keepalive\n\nevent: result\nid: 1\ndata: a\ndata:b\n\ndata: tail"
    response = httpx.Response(200, content=body.encode())
    assert [e async for e in sse_events(response)] == [("result", "a\nb"), ("message", "tail")]
