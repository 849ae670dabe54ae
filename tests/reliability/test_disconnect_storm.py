"""Clients that leave at random moments (before, at and after the response headers), and runs
refused after they started, against the real tiny engine: the engine lives on and its KV pool
ends exactly empty."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path

import httpx

from dashserve.engine.async_engine import AsyncEngine
from dashserve.engine.engine import EngineConfig, LLMEngine
from dashserve.errors import Throttled
from dashserve.platform.gate import Admission, Principal
from tests.reliability.conftest import CHAT, LONG, NATIVE, Live, kv_pool_is_empty, start_live
from tests.utils.recording_gate import RecordingGate

REQUESTS = 1000 if LONG else 240
CONCURRENCY = 24


def _request(path: str, body: dict, stream_header: bool) -> bytes:
    data = json.dumps(body).encode()
    headers = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Authorization: Bearer sk-test",
               "Content-Type: application/json", f"Content-Length: {len(data)}",
               "Connection: close"]
    if stream_header:
        headers.append("X-DashScope-SSE: enable")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + data


async def _one(port: int, rng: random.Random, i: int) -> str:
    """One client; returns how it left."""
    mode = rng.choice(("before_headers", "at_headers", "mid_body", "whole"))
    tokens = rng.randint(1, 40)
    if rng.random() < 0.5:
        body = {"model": "qwen-plus", "input": {"messages": [{"role": "user",
                                                              "content": f"storm {i}"}]},
                "parameters": {"max_tokens": tokens, "incremental_output": True}}
        raw = _request(NATIVE, body, stream_header=rng.random() < 0.7)
    else:
        body = {"model": "qwen-plus", "max_tokens": tokens, "stream": rng.random() < 0.7,
                "messages": [{"role": "user", "content": f"storm {i}"}]}
        raw = _request(CHAT, body, stream_header=False)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        if mode == "before_headers":
            await asyncio.sleep(rng.random() * 0.01)
        elif mode == "at_headers":
            await reader.readuntil(b"\r\n\r\n")
        elif mode == "mid_body":
            await reader.readuntil(b"\r\n\r\n")
            await reader.read(rng.randint(1, 300))
        else:
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            while await reader.read(65536) and not reader.at_eof():
                pass
    finally:
        writer.transport.abort()  # a reset, as a killed client leaves
    return mode


def storm_engine(model_dir: Path) -> AsyncEngine:
    return AsyncEngine(LLMEngine(EngineConfig(
        model=str(model_dir), dtype="fp32", max_model_len=512, max_num_seqs=32,
        max_num_batched_tokens=256)))


async def assert_drained(engine: AsyncEngine, live: Live) -> None:
    """Every request aborted or finished, every block back, the engine alive."""
    for _ in range(600):
        if not engine.engine.has_unfinished() and live.app.state.service.num_inflight == 0:
            break
        await asyncio.sleep(0.05)
    assert engine.is_alive
    assert live.app.state.service.num_inflight == 0
    assert kv_pool_is_empty(engine)


async def test_random_disconnect_storm_leaves_the_kv_pool_empty(qwen3_tiny_dir: Path) -> None:
    engine = storm_engine(qwen3_tiny_dir)
    live = start_live({"qwen-plus": engine}, RecordingGate())
    rng = random.Random(20)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def guarded(i: int) -> str:
        async with limit:
            try:
                return await asyncio.wait_for(_one(live.port, rng, i), 60)
            except (ConnectionError, asyncio.IncompleteReadError):
                return "reset"

    try:
        started = time.monotonic()
        modes = await asyncio.gather(*(guarded(i) for i in range(REQUESTS)))
        summary = (f"storm: {REQUESTS} requests in {time.monotonic() - started:.1f} s: "
                   f"{dict(Counter(modes))}")
        assert modes.count("at_headers") > REQUESTS // 8, summary
        await assert_drained(engine, live)
        async with httpx.AsyncClient(base_url=live.base_url, timeout=30) as client:
            r = await client.post(CHAT, headers={"Authorization": "Bearer sk-test"}, json={
                "model": "qwen-plus", "max_tokens": 3,
                "messages": [{"role": "user", "content": "still there?"}]})
            assert r.status_code == 200
            assert (await client.get("/health")).status_code == 200
    finally:
        live.stop()
        await engine.shutdown()


class CoinGate(RecordingGate):
    """Expects to admit every request, then answers after up to 20 ms, refusing about half:
    runs started before their admission, refused after the engine took them."""

    def __init__(self) -> None:
        super().__init__()
        self.expects = True
        self.rng = random.Random(7)

    async def admit(self, principal: Principal, request_id: str, model: str,
                    estimated_tokens: int) -> Admission:
        await asyncio.sleep(self.rng.random() * 0.02)
        if self.rng.random() < 0.5:
            raise Throttled(retry_after_s=1.0)
        return await super().admit(principal, request_id, model, estimated_tokens)


async def test_runs_refused_after_they_started_leave_the_kv_pool_empty(
        qwen3_tiny_dir: Path) -> None:
    engine = storm_engine(qwen3_tiny_dir)
    gate = CoinGate()
    live = start_live({"qwen-plus": engine}, gate)
    limit = asyncio.Semaphore(8)
    headers = {"Authorization": "Bearer sk-test"}

    async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
        async with limit:
            return await client.post(CHAT, headers=headers, json={
                "model": "qwen-plus", "max_tokens": 8, "stream": i % 2 == 0,
                "messages": [{"role": "user", "content": f"early {i} " * (i % 7 + 1)}]})

    try:
        async with httpx.AsyncClient(base_url=live.base_url, timeout=60) as client:
            answers = await asyncio.gather(*(one(client, i) for i in range(60)))
        statuses = Counter(a.status_code for a in answers)
        assert set(statuses) == {200, 429} and statuses[429] > 10, statuses
        assert len(gate.records) == statuses[200]  # billed: the admitted ones, once each
        assert len({r.request_id for r in gate.records}) == statuses[200]
        assert all(r.status_code == 200 and r.output_tokens > 0 for r in gate.records)
        await assert_drained(engine, live)
    finally:
        live.stop()
        await engine.shutdown()
