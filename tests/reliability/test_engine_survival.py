"""The engine thread survives clients that leave at any moment, and a dead one is reported."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest

from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.engine.async_engine import AsyncEngine
from dashserve.engine.engine import EngineConfig, LLMEngine
from tests.reliability.conftest import kv_pool_is_empty
from tests.utils.recording_gate import RecordingGate

LONG = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)
SHORT = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)


def tiny_engine(model_dir: Path) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(model_dir), dtype="fp32", max_model_len=512,
                                  max_num_seqs=16, max_num_batched_tokens=64))


async def _drain(engine: AsyncEngine) -> None:
    for _ in range(500):
        if not engine.engine.has_unfinished() and engine._commands.empty():
            return
        await asyncio.sleep(0.01)


async def collect(events):
    return [e async for e in events]


async def test_a_request_dropped_before_the_engine_takes_it_does_not_kill_the_thread(
        qwen3_tiny_dir: Path) -> None:
    engine = AsyncEngine(tiny_engine(qwen3_tiny_dir))
    inner_step = engine.engine.step
    stepping, release = threading.Event(), threading.Event()

    def held_step():  # the first step waits, so commands queue up behind it
        stepping.set()
        release.wait(10)
        return inner_step()

    engine.engine.step = held_step  # type: ignore[method-assign]
    try:
        long = engine.submit(EngineRequest("long", [100, 101, 102], LONG))
        first = asyncio.ensure_future(long.__anext__())
        assert await asyncio.to_thread(stepping.wait, 10)
        dropped = [asyncio.ensure_future(engine.submit(EngineRequest(f"d{i}", [200, 201], SHORT)).__anext__())
                   for i in range(16)]
        await asyncio.sleep(0.05)  # each waits for the engine to take its command
        for task in dropped:
            task.cancel()
        await asyncio.gather(*dropped, return_exceptions=True)
        release.set()
        await asyncio.wait_for(first, 30)
        await long.aclose()
        events = await asyncio.wait_for(collect(engine.submit(EngineRequest("after", [300, 301], SHORT))), 30)
        assert events[-1].finished
        assert engine.is_alive
        await _drain(engine)
        assert kv_pool_is_empty(engine)
    finally:
        release.set()
        await engine.shutdown()


async def test_a_failing_command_is_reported_to_its_caller_and_the_loop_goes_on(
        qwen3_tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = AsyncEngine(tiny_engine(qwen3_tiny_dir))
    try:
        original = engine.engine.abort

        def broken_abort(request_id: str):
            if request_id == "boom":
                raise RuntimeError("abort failed")
            return original(request_id)

        monkeypatch.setattr(engine.engine, "abort", broken_abort)
        await engine.abort("boom")
        events = await asyncio.wait_for(collect(engine.submit(EngineRequest("ok", [300, 301], SHORT))), 30)
        assert events[-1].finished and engine.is_alive
    finally:
        await engine.shutdown()


async def test_health_answers_503_when_an_engine_thread_died(qwen3_tiny_dir: Path) -> None:
    engine = AsyncEngine(tiny_engine(qwen3_tiny_dir))
    app = create_app(Settings(), {"qwen-plus": engine}, RecordingGate())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/health")).status_code == 200
        engine._commands.put(None)  # the thread ends as if it had died
        await asyncio.to_thread(engine._thread.join, 10)
        response = await client.get("/health")
        assert response.status_code == 503
        assert "engine" in response.json()["detail"]
        response = await client.post(
            "/api/v1/services/aigc/text-generation/generation",
            headers={"Authorization": "Bearer sk-test"},
            json={"model": "qwen-plus", "input": {"messages": [{"role": "user", "content": "hi"}]}})
        assert response.status_code == 503 and response.json()["code"] == "ModelUnavailable"
