"""The token-id wire: shapes round-trip, and RemoteEngineClient over a live engine server
(a FakeEngine behind ``EngineServer`` on a loopback port) behaves as the engine itself."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import torch
import uvicorn

from dashserve.contracts.engine_client import ModelInfo, VisionInfo
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.outputs import (
    EngineEvent,
    EngineStats,
    FinishReason,
    TokenLogprob,
    TopLogprob,
)
from dashserve.contracts.params import SamplingParams, StructuredOutputSpec
from dashserve.contracts.request import EngineRequest
from dashserve.errors import InvalidRequest, ModelUnavailable, PromptTooLong
from dashserve.tokenizer import Tokenizer
from dashserve.upstream import token_wire as wire
from dashserve.upstream.engine_member import engine_pool
from dashserve.upstream.engine_server import EngineServer, tokenizer_files
from dashserve.upstream.remote_engine import EngineMismatch, RemoteEngineClient
from tests.integration.conftest import free_port
from tests.utils.fake_engine import FAKE_VISION, FakeEngine

SECRET = "wire-secret"


def _json_trip(data: Any) -> Any:
    return json.loads(json.dumps(data))


def test_sampling_params_round_trip() -> None:
    params = SamplingParams(
        temperature=0.3, top_p=0.9, top_k=20, min_p=0.05, repetition_penalty=1.1,
        presence_penalty=0.5, frequency_penalty=-0.5, seed=42, max_tokens=17, min_tokens=2,
        stop=("END", "\n\n"), stop_token_ids=(7, 9), n=2, logprobs=True, top_logprobs=3,
        structured=StructuredOutputSpec(json_schema={"type": "object"}),
        skip_special_tokens=False, thinking_budget=64, starts_in_thinking=True,
        pin_prefix_tokens=128, pin_ttl_s=60.0, cache_salt="ws:a", extra={"k": [1, 2]})
    back = wire.params_from_wire(_json_trip(wire.params_to_wire(params)))
    assert back == params and back.extra == {"k": [1, 2]}
    assert isinstance(back.stop, tuple) and isinstance(back.stop_token_ids, tuple)
    grammar = SamplingParams(structured=StructuredOutputSpec(grammar="start: /a+/"))
    assert wire.params_from_wire(_json_trip(wire.params_to_wire(grammar))) == grammar


def test_bad_params_from_the_wire_are_refused() -> None:
    with pytest.raises(InvalidRequest) as exc:
        wire.params_from_wire({"temperature": -1.0})
    assert exc.value.param == "temperature"
    with pytest.raises(wire.WireError, match="unknown"):
        wire.params_from_wire({"tempreature": 1.0})


def test_event_round_trip_with_logprobs() -> None:
    event = EngineEvent(
        request_id="r1", index=1, token_ids=[5, 6], text="héllo", finish_reason=FinishReason.LENGTH,
        num_prompt_tokens=11, num_output_tokens=4, num_cached_tokens=8,
        logprobs=[TokenLogprob(5, "hé", [104, 195, 169], -0.5,
                               [TopLogprob(5, "hé", [104, 195, 169], -0.5),
                                TopLogprob(9, "x", [120], -2.0)])],
        finished=True, num_reasoning_tokens=3, num_cache_created_tokens=2)
    line = wire.encode_line({"event": wire.event_to_wire(event)})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert wire.event_from_wire(wire.decode_line(line)["event"]) == event
    plain = EngineEvent("r2", 0, [1], "a", None, 3, 1)
    assert wire.event_from_wire(_json_trip(wire.event_to_wire(plain))) == plain
    with pytest.raises(wire.WireError):
        wire.event_from_wire({"request_id": "r"})
    with pytest.raises(wire.WireError):
        wire.decode_line(b"[1, 2]")


def test_errors_keep_their_kind_and_param() -> None:
    too_long = wire.error_from_wire(_json_trip(wire.error_to_wire(PromptTooLong("big", param="input"))))
    assert type(too_long) is PromptTooLong and too_long.param == "input"
    bad = wire.error_from_wire(_json_trip(wire.error_to_wire(InvalidRequest("no", param="top_p"))))
    assert type(bad) is InvalidRequest and bad.param == "top_p" and bad.message == "no"
    other = wire.error_from_wire(_json_trip(wire.error_to_wire(RuntimeError("step failed"))))
    assert isinstance(other, wire.RemoteEngineFailure) and "step failed" in str(other)


def test_images_and_videos_round_trip() -> None:
    pixels = torch.randn(16, 1536)
    item = MultiModalInput("video", pixels, (2, 2, 4), "ab" * 32, offset=5, length=4,
                           second_per_grid_t=0.5)
    back = wire.mm_input_from_wire(_json_trip(wire.mm_input_to_wire(item)))
    assert torch.equal(back.pixel_values, pixels) and back.pixel_values.dtype == torch.float32
    assert (back.kind, back.grid_thw, back.content_hash, back.offset, back.length,
            back.second_per_grid_t) == ("video", (2, 2, 4), "ab" * 32, 5, 4, 0.5)
    with pytest.raises(wire.WireError):
        wire.mm_input_from_wire({**wire.mm_input_to_wire(item), "shape": [3, 3]})
    with pytest.raises(wire.WireError):
        wire.mm_input_from_wire({**wire.mm_input_to_wire(item), "kind": "audio"})


def test_model_info_and_stats_round_trip() -> None:
    vision = VisionInfo("qwen3-vl", 16, 2, 2, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1, 2, 3, 4)
    info = ModelInfo("m", "Qwen3VLForConditionalGeneration", 4096, 1000, vision, 100)
    assert wire.model_info_from_wire(_json_trip(wire.model_info_to_wire(info))) == info
    stats = EngineStats(1, 2, 30, 20, 4, 5, 6)
    data = _json_trip(wire.stats_to_wire(stats)) | {"num_streams": 3}
    assert wire.stats_from_wire(data) == stats
    assert wire.tokenizer_id({"a": "1", "b": "2"}) == wire.tokenizer_id({"b": "2", "a": "1"})
    assert wire.tokenizer_id({"a": "1"}) != wire.tokenizer_id({"a": "2"})


# ----- a live engine server ---------------------------------------------------------------------


class LiveEngine:
    """``engine`` behind an engine server on a loopback port (uvicorn in a thread)."""

    def __init__(self, engine: Any, files: dict[str, str], secret: str | None) -> None:
        self.engine = engine
        self.wire = EngineServer(engine, files, secret)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(self.wire.app(), host="127.0.0.1", port=port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def files(qwen3_tiny_dir: Path) -> dict[str, str]:
    return tokenizer_files(qwen3_tiny_dir)


@pytest.fixture
def live_engine(files: dict[str, str]) -> Iterator[LiveEngine]:
    live = LiveEngine(FakeEngine(script=[f" w{i}" for i in range(6)], token_delay_s=0.01,
                                 cached_tokens=2), files, SECRET)
    yield live
    live.stop()


@pytest.fixture
async def client(live_engine: LiveEngine) -> AsyncIterator[RemoteEngineClient]:
    remote = await RemoteEngineClient.connect(live_engine.url, secret=SECRET)
    yield remote
    await remote.shutdown()


async def _collect(events: AsyncIterator[EngineEvent]) -> list[EngineEvent]:
    return [event async for event in events]


async def test_remote_events_equal_the_engines_own(
        client: RemoteEngineClient, live_engine: LiveEngine, files: dict[str, str],
        tokenizer: Tokenizer) -> None:
    params = SamplingParams(max_tokens=4, logprobs=True, top_logprobs=2, n=2, stop=("w3",))
    remote = await _collect(client.submit(EngineRequest("r-1", [1, 2, 3], params)))
    local = await _collect(FakeEngine(script=[f" w{i}" for i in range(6)],
                                      cached_tokens=2).submit(EngineRequest("r-1", [1, 2, 3], params)))
    assert remote == local and remote[-1].finished
    seen = live_engine.engine.submissions[-1]
    assert seen.params == params and seen.prompt_token_ids == [1, 2, 3]
    assert client.tokenizer_id == wire.tokenizer_id(files)
    assert client.model_info == live_engine.engine.model_info
    text = "hello <|im_start|>world 你好"  # the front renders with the engine's own files
    assert client.tokenizer.encode(text) == tokenizer.encode(text)
    assert client.tokenizer.chat_template == tokenizer.chat_template


async def test_engine_refusals_arrive_as_the_same_exceptions(client: RemoteEngineClient) -> None:
    with pytest.raises(PromptTooLong) as exc:
        await _collect(client.submit(EngineRequest("r-long", list(range(5000)), SamplingParams())))
    assert exc.value.param == "input"


async def test_images_reach_a_vision_engine(files: dict[str, str]) -> None:
    live = LiveEngine(FakeEngine(vision=FAKE_VISION), files, None)
    try:
        remote = await RemoteEngineClient.connect(live.url)
        assert remote.model_info.vision == FAKE_VISION
        image = MultiModalInput("image", torch.rand(64, 1536), (1, 8, 8), "cd" * 32, 3, 16)
        events = await _collect(remote.submit(EngineRequest("r-img", list(range(24)), SamplingParams(),
                                              mm_inputs=(image,))))
        assert events[-1].finished
        (seen,) = live.engine.submissions[-1].mm_inputs
        assert torch.equal(seen.pixel_values, image.pixel_values)
        assert (seen.grid_thw, seen.offset, seen.length) == ((1, 8, 8), 3, 16)
        await remote.shutdown()
    finally:
        live.stop()


async def test_an_engine_failure_mid_stream_is_an_error_not_a_hang(
        files: dict[str, str]) -> None:
    live = LiveEngine(FakeEngine(fail_after=2), files, None)
    try:
        remote = await RemoteEngineClient.connect(live.url)
        got: list[EngineEvent] = []
        with pytest.raises(wire.RemoteEngineFailure, match="boom"):
            async for event in remote.submit(EngineRequest("r-fail", [1], SamplingParams())):
                got.append(event)
        assert len(got) == 2
        await remote.shutdown()
    finally:
        live.stop()


async def test_secret_and_tokenizer_checked_at_connect(live_engine: LiveEngine) -> None:
    with pytest.raises(aiohttp.ClientResponseError) as exc:
        await RemoteEngineClient.connect(live_engine.url)
    assert exc.value.status == 401
    with pytest.raises(EngineMismatch, match="another tokenizer"):
        await RemoteEngineClient.connect(live_engine.url, secret=SECRET, tokenizer_id="0" * 64)
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{live_engine.url}/v1/generate", json={"request_id": "x"},
                            headers={"authorization": "Bearer nope"})
        assert r.status_code == 401
        r = await http.post(f"{live_engine.url}/v1/generate", content=b"not json",
                            headers={"authorization": f"Bearer {SECRET}"})
        assert r.status_code == 400 and r.json()["error"]["kind"] == "bad_request"
        r = await http.post(f"{live_engine.url}/v1/generate", json={
            "request_id": "x", "prompt_token_ids": [1], "params": {"top_p": 7}},
            headers={"authorization": f"Bearer {SECRET}"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "top_p"


async def _poll(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_leaving_the_stream_aborts_in_the_engine(
        client: RemoteEngineClient, live_engine: LiveEngine) -> None:
    events = client.submit(EngineRequest("r-leave", [1, 2], SamplingParams()))
    first = await events.__anext__()
    assert first.token_ids
    await events.aclose()  # what the server does when its client disconnects
    await _poll(lambda: "r-leave" in live_engine.engine.aborted)
    await _poll(lambda: live_engine.wire.num_streams == 0)
    assert "r-leave" not in live_engine.engine.completed


async def test_stats_follow_the_engine(client: RemoteEngineClient,
                                       live_engine: LiveEngine) -> None:
    client.stats_interval_s = 0.02
    live_engine.engine.active.update({"a", "b"})
    await _poll(lambda: client.stats().num_running == 2)
    live_engine.engine.active.clear()
    await _poll(lambda: client.stats().num_running == 0)
    assert client.is_alive


async def test_an_unreachable_engine_is_a_503_and_is_skipped(
        client: RemoteEngineClient, live_engine: LiveEngine, files: dict[str, str]) -> None:
    other = LiveEngine(FakeEngine(script=["ok"]), files, SECRET)
    second = await RemoteEngineClient.connect(other.url, secret=SECRET)
    other.stop()
    with pytest.raises(ModelUnavailable):
        await _collect(second.submit(EngineRequest("r-gone", [1], SamplingParams())))
    assert not second.is_alive
    pool = engine_pool("m", [second, client])
    for i in range(3):  # the dead member is skipped (taken out) whatever the router picks
        events = await _collect(pool.submit(EngineRequest(f"r-pool-{i}", [1], SamplingParams())))
        assert events[-1].finished
    assert pool.is_alive
    await second.shutdown()
