"""Native SSE: exact framing, delta vs snapshot, per-model defaults, n > 1, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.conftest import MULTIMODAL, NATIVE, native_body
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate
from tests.utils.sse import native_events

SSE = {"X-DashScope-SSE": "enable"}


async def stream(client: httpx.AsyncClient, body: dict[str, Any], path: str = NATIVE,
                 headers: dict[str, str] | None = None) -> tuple[httpx.Response, list[Any]]:
    r = await client.post(path, json=body, headers=headers or SSE)
    assert r.status_code == 200, r.text
    return r, native_events(r.text)


async def test_exact_framing(client: httpx.AsyncClient) -> None:
    r, events = await stream(client, native_body("qwen3-0.6b"))
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    first = r.text.split("\n\n")[0].split("\n")
    assert first[:3] == ["id:1", "event:result", ":HTTP_STATUS/200"]
    assert first[3].startswith("data:{") and len(first) == 4
    assert r.text.endswith("}\n\n")
    assert [e["id"] for e in events] == [str(i) for i in range(1, len(events) + 1)]
    rid = r.headers["x-request-id"]
    for e in events:
        assert e["event"] == "result" and e["data"]["request_id"] == rid
        assert set(e["data"]["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    reasons = [e["data"]["output"]["choices"][0]["finish_reason"] for e in events]
    assert reasons == ["null"] * (len(events) - 1) + ["stop"]
    outputs = [e["data"]["usage"]["output_tokens"] for e in events]
    assert outputs == sorted(outputs) and outputs[-1] == 6


async def test_incremental_output_true_gives_deltas(client: httpx.AsyncClient) -> None:
    _, events = await stream(client, native_body(result_format="message",
                                                 incremental_output=True))
    texts = [e["data"]["output"]["choices"][0]["message"]["content"] for e in events]
    assert texts == ["Hello", " from", " dash", "serve", "!", ""]
    assert all(e["data"]["output"]["choices"][0]["message"]["role"] == "assistant"
               for e in events)


async def test_incremental_output_false_gives_snapshots(client: httpx.AsyncClient) -> None:
    _, events = await stream(client, native_body(result_format="message",
                                                 incremental_output=False))
    texts = [e["data"]["output"]["choices"][0]["message"]["content"] for e in events]
    assert texts[0] == "Hello" and texts[2] == "Hello from dash"
    assert texts[-1] == "Hello from dashserve!"


@pytest.mark.parametrize(("model", "incremental"), [("qwen-plus", False), ("qwen3-0.6b", True)])
async def test_incremental_default_per_model(client: httpx.AsyncClient, model: str,
                                             incremental: bool) -> None:
    _, events = await stream(client, native_body(model, result_format="message"))
    second = events[1]["data"]["output"]["choices"][0]["message"]["content"]
    assert second == (" from" if incremental else "Hello from")


async def test_accept_header_also_streams(client: httpx.AsyncClient) -> None:
    _, events = await stream(client, native_body(), headers={"Accept": "text/event-stream"})
    assert len(events) == 6


async def test_text_format_stream(client: httpx.AsyncClient) -> None:
    _, events = await stream(client, native_body(incremental_output=True))
    assert events[0]["data"]["output"] == {"text": "Hello", "finish_reason": "null"}
    assert events[-1]["data"]["output"] == {"text": "", "finish_reason": "stop"}


async def test_n_two_streams_one_choice_per_event(client: httpx.AsyncClient) -> None:
    _, events = await stream(client, native_body(n=2, result_format="message",
                                                 incremental_output=True))
    by_index: dict[int, str] = {0: "", 1: ""}
    for e in events:
        (choice,) = e["data"]["output"]["choices"]
        by_index[choice["index"]] += choice["message"]["content"]
        # usage counts this choice's tokens, as the SDK's n > 1 merger expects
        assert e["data"]["usage"]["output_tokens"] <= 7
    assert by_index == {0: "Hello from dashserve!", 1: "[1]Hello from dashserve!"}
    finals = [e["data"]["output"]["choices"][0] for e in events
              if e["data"]["output"]["choices"][0]["finish_reason"] != "null"]
    assert sorted(c["index"] for c in finals) == [0, 1]


async def test_stream_logprobs_are_deltas(client: httpx.AsyncClient) -> None:
    _, events = await stream(client, native_body(logprobs=True, result_format="message",
                                                 incremental_output=True, max_tokens=3))
    tokens = [[t["token"] for t in e["data"]["output"]["choices"][0]["logprobs"]["content"]]
              for e in events]
    assert tokens == [["Hello"], [" from"], [" dash"]]


async def test_multimodal_stream_content_lists(client: httpx.AsyncClient) -> None:
    body = {"model": "qwen3-vl-plus", "input": {"messages": [
        {"role": "user", "content": [{"text": "hi"}]}]}, "parameters": {"incremental_output": True}}
    _, events = await stream(client, body, MULTIMODAL)
    contents = [e["data"]["output"]["choices"][0]["message"]["content"] for e in events]
    assert contents[0] == [{"text": "Hello"}] and contents[-1] == []


async def test_error_mid_stream(make_client: Callable[..., httpx.AsyncClient],
                                gate: RecordingGate) -> None:
    engine = FakeEngine(fail_after=2)
    async with make_client({"qwen-plus": engine}) as c:
        r = await c.post(NATIVE, json=native_body(incremental_output=True), headers=SSE)
    assert r.status_code == 200
    blocks = r.text.strip().split("\n\n")
    assert len(blocks) == 3
    lines = blocks[-1].split("\n")
    assert lines[:4] == ["id:3", "event:error", ":HTTP_STATUS/500", "status:500"]
    events = native_events(r.text)
    assert events[-1]["data"] == {"code": "InternalError", "message": events[-1]["data"]["message"],
                                  "request_id": r.headers["x-request-id"]}
    (record,) = gate.records
    assert (record.status_code, record.finish_reason, record.output_tokens) == (500, None, 2)


async def test_status_line_can_be_turned_off(make_client: Callable[..., httpx.AsyncClient]
                                             ) -> None:
    async with make_client({"qwen-plus": FakeEngine(fail_after=0)}, sse_status_line=False) as c:
        r = await c.post(NATIVE, json=native_body(), headers=SSE)
    assert "status:" not in r.text and "event:error" in r.text


async def test_errors_before_the_stream_are_json(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json=native_body(temperature=5), headers=SSE)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json()["code"] == "InvalidParameter"


async def test_stream_is_billed_once(client: httpx.AsyncClient, gate: RecordingGate) -> None:
    r, _ = await stream(client, native_body())
    (record,) = gate.records_for(r.headers["x-request-id"])
    assert (record.status_code, record.finish_reason, record.output_tokens) == (200, "stop", 6)
