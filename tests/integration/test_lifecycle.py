"""Life of a request on a real server: disconnects abort at once, heartbeats, graceful shutdown."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.integration.conftest import API_KEY, LiveServer, start_server
from tests.utils.fake_engine import FakeEngine
from tests.utils.sse import native_events

NATIVE = "/api/v1/services/aigc/text-generation/generation"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def body(model: str) -> dict[str, object]:
    return {"model": model, "input": {"prompt": "hi"},
            "parameters": {"incremental_output": True}}


def test_stream_disconnect_aborts_at_once(live: LiveServer) -> None:
    engine = live.engines["long-model"]
    with httpx.Client(base_url=live.base_url, headers=HEADERS) as client, client.stream(
            "POST", NATIVE, json=body("long-model"),
            headers={"X-DashScope-SSE": "enable"}) as r:
        request_id = r.headers["x-request-id"]
        data: list[str] = []
        for line in r.iter_lines():
            if line.startswith("data:"):
                data.append(line)
            if len(data) == 3:
                break
    closed_at = time.monotonic()
    wait_for(lambda: request_id in engine.aborted)
    assert time.monotonic() - closed_at < 1.0  # 400 tokens would take 4 s
    assert request_id not in engine.active and request_id not in engine.completed
    wait_for(lambda: bool(live.gate.records_for(request_id)))
    (record,) = live.gate.records_for(request_id)
    assert (record.status_code, record.finish_reason) == (499, "abort")
    assert 3 <= record.output_tokens < 400


def test_non_stream_disconnect_aborts(live: LiveServer) -> None:
    engine = live.engines["long-model"]
    before = len(engine.aborted)
    payload = json.dumps(body("long-model")).encode()
    host, port = live.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST " + NATIVE.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        wait_for(lambda: bool(engine.active))
    wait_for(lambda: len(engine.aborted) > before)
    request_id = engine.aborted[-1]
    wait_for(lambda: bool(live.gate.records_for(request_id)))
    assert live.gate.records_for(request_id)[0].status_code == 499


def test_heartbeats_while_waiting(live: LiveServer) -> None:
    with httpx.Client(base_url=live.base_url, headers=HEADERS) as client:
        r = client.post(NATIVE, json=body("slow-model"), headers={"X-DashScope-SSE": "enable"})
    assert r.text.startswith(":keepalive\n\n")
    assert len(native_events(r.text)) == 6


@pytest.fixture
def grace_server() -> Iterator[LiveServer]:
    engines = {"qwen-plus": FakeEngine(script=[f" w{i}" for i in range(30)],
                                       token_delay_s=0.02)}
    server = start_server(engines, shutdown_grace_s=5)
    yield server
    server.stop()


def test_shutdown_finishes_requests_in_flight(grace_server: LiveServer) -> None:
    engine = grace_server.engines["qwen-plus"]
    result: dict[str, str] = {}

    def read_stream() -> None:
        with httpx.Client(base_url=grace_server.base_url, headers=HEADERS, timeout=10) as c:
            r = c.post(NATIVE, json=body("qwen-plus"), headers={"X-DashScope-SSE": "enable"})
            result["text"] = r.text

    reader = threading.Thread(target=read_stream)
    reader.start()
    wait_for(lambda: bool(engine.active))
    grace_server.server.should_exit = True  # what SIGTERM does
    time.sleep(0.2)
    with pytest.raises(httpx.TransportError):  # no new requests
        httpx.post(grace_server.base_url + NATIVE, json=body("qwen-plus"), headers=HEADERS,
                   timeout=1)
    reader.join(10)
    grace_server.thread.join(10)
    events = native_events(result["text"])
    assert events[-1]["data"]["output"]["finish_reason"] == "stop"
    assert "".join(e["data"]["output"]["text"] for e in events).count(" w") == 30
    assert engine.completed and not engine.aborted
    assert engine.is_shut_down and grace_server.gate.stopped


def test_shutdown_grace_expires() -> None:
    engine = FakeEngine(script=[f" w{i}" for i in range(500)], token_delay_s=0.02)
    server = start_server({"qwen-plus": engine}, shutdown_grace_s=0.3)

    def read_stream() -> None:
        try:
            with httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=10) as c:
                c.post(NATIVE, json=body("qwen-plus"), headers={"X-DashScope-SSE": "enable"})
        except httpx.HTTPError:
            pass

    reader = threading.Thread(target=read_stream)
    reader.start()
    wait_for(lambda: bool(engine.active))
    server.stop()
    reader.join(10)
    assert engine.aborted and not engine.active
    (record,) = server.gate.records
    # cut by shutdown (503) or seen as a dropped client (499), whichever closes it first
    assert record.status_code in (499, 503) and record.finish_reason == "abort"
    assert engine.is_shut_down


def test_many_concurrent_requests(live: LiveServer) -> None:
    import asyncio

    async def one(client: httpx.AsyncClient, i: int) -> str:
        if i % 3 == 0:
            r = await client.post("/compatible-mode/v1/chat/completions", json={
                "model": "qwen-plus", "stream": True,
                "messages": [{"role": "user", "content": str(i)}]})
        else:
            r = await client.post(NATIVE, json=body("qwen-plus"),
                                  headers={"X-DashScope-SSE": "enable"} if i % 3 == 1 else {})
        assert r.status_code == 200
        return r.headers["x-request-id"]

    async def main() -> list[str]:
        async with httpx.AsyncClient(base_url=live.base_url, headers=HEADERS,
                                     timeout=30) as client:
            return list(await asyncio.gather(*(one(client, i) for i in range(40))))

    ids = asyncio.run(main())
    assert len(set(ids)) == 40
    wait_for(lambda: all(live.gate.records_for(rid) for rid in ids))
    assert all(len(live.gate.records_for(rid)) == 1 for rid in ids)
    assert live.app.state.service.num_inflight == 0
