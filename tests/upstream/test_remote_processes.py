"""Two ``dashserve engine-serve`` processes of a tiny model behind one front (an upstream
pool of kind "dashserve", built as ``[[upstreams]]`` builds it): the SDKs get the same
answers and exact usage as from an engine in the front's own process; a repeated prefix
lands on the process that holds it in its prefix cache; a killed process
is a DashScope error for the request it served (no hang, nothing left running); a client
that leaves aborts the request inside the engine process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashserve.engine.async_engine import AsyncEngine
from dashserve.upstream.build import build_pools
from dashserve.upstream.config import UpstreamSpec
from tests.integration.conftest import API_KEY, LiveServer, free_port, start_server

pytestmark = pytest.mark.slow  # two engine processes start (about a minute on 2 cores)

MODEL = "qwen-plus"
SECRET = "loopback-secret"
ENGINE_ARGS = ("--dtype", "fp32", "--max-model-len", "1024")
GREEDY = {"top_k": 1, "seed": 7}
PROMPT = ("You are a careful assistant. Answer in one short sentence, then stop. "
          "The question follows. ") * 4


@dataclass
class EngineProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stats(self) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/v1/stats", headers={"authorization": f"Bearer {SECRET}"},
                      timeout=5)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data


def poll(predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not reached in {timeout_s} s: {what}"
        time.sleep(0.02)


def start_engine_process(model_dir: Path, log: Path) -> EngineProcess:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashserve", "engine-serve", "--model", str(model_dir),
             "--port", str(port), "--secret", SECRET, *ENGINE_ARGS],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    return EngineProcess(proc, f"http://127.0.0.1:{port}", log)


def wait_healthy(engine: EngineProcess, timeout_s: float = 240) -> None:
    def healthy() -> bool:
        assert engine.proc.poll() is None, engine.log.read_text()
        try:
            return httpx.get(f"{engine.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    poll(healthy, timeout_s, f"{engine.url} healthy")


@pytest.fixture(scope="module")
def processes(qwen3_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[list[EngineProcess]]:
    logs = tmp_path_factory.mktemp("engine-logs")
    engines = [start_engine_process(qwen3_tiny_dir, logs / f"engine-{i}.log") for i in range(2)]
    try:
        for engine in engines:
            wait_healthy(engine)
        yield engines
    finally:
        for engine in engines:
            if engine.proc.poll() is None:
                engine.proc.terminate()
                try:
                    engine.proc.wait(20)
                except subprocess.TimeoutExpired:
                    engine.proc.kill()


@pytest.fixture(scope="module")
def front(processes: list[EngineProcess]) -> Iterator[LiveServer]:
    spec = UpstreamSpec(name=MODEL, kind="dashserve", urls=tuple(p.url for p in processes),
                        api_key=SECRET, probe_interval_s=0.2)
    server = start_server(build_pools([spec]))  # type: ignore[arg-type]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local(qwen3_tiny_dir: Path) -> Iterator[LiveServer]:
    """The same model in the front's own process: the reference for answers and usage."""
    engine = AsyncEngine.from_pretrained(str(qwen3_tiny_dir), dtype="fp32", max_model_len=1024)
    server = start_server({MODEL: engine})  # type: ignore[dict-item]
    yield server
    server.stop()


def _dashscope(server: LiveServer, model: str = MODEL, **kwargs: Any) -> Any:
    import dashscope

    return dashscope.Generation.call(model=model, api_key=API_KEY,
                                     base_address=server.native_url, **kwargs)


def _usage_of(server: LiveServer, request_id: str) -> Any:
    poll(lambda: bool(server.gate.records_for(request_id)), 10, "usage record")
    return server.gate.records_for(request_id)[-1]


def test_dashscope_sdk_through_two_engine_processes_matches_in_process(
        front: LiveServer, local: LiveServer, processes: list[EngineProcess]) -> None:
    before = [p.stats()["num_requests"] for p in processes]
    answers = []
    for server in (local, front, front):
        r = _dashscope(server, messages=[{"role": "user", "content": PROMPT + "你好?"}],
                       result_format="message", max_tokens=24, **GREEDY)
        assert r.status_code == 200, r
        record = _usage_of(server, r.request_id)
        assert (record.input_tokens, record.output_tokens) == (
            r.usage.input_tokens, r.usage.output_tokens)
        answers.append((r.output.choices[0].message.content, r.usage.input_tokens,
                        r.usage.output_tokens, r.output.choices[0].finish_reason))
    assert answers[0] == answers[1] == answers[2]
    after = [p.stats()["num_requests"] for p in processes]
    # the repeated prompt went where its prefix is cached
    assert sorted(a - b for a, b in zip(after, before, strict=True)) == [0, 2]


def test_streams_and_cached_tokens_exact_through_the_front(
        front: LiveServer, local: LiveServer) -> None:
    messages = [{"role": "system", "content": PROMPT}, {"role": "user", "content": "1+1?"}]
    runs: dict[str, list[tuple[str, int, int, int]]] = {}
    # prefix affinity: the front's 2nd to 4th requests go to the process that served the
    # 1st and meet a warm prefix cache, as the in-process engine's 2nd does
    for label, server, count in (("local", local, 2), ("front", front, 4)):
        runs[label] = []
        for _ in range(count):
            chunks = list(_dashscope(server, messages=messages, result_format="message",
                                     stream=True, incremental_output=True, max_tokens=16,
                                     **GREEDY))
            assert all(c.status_code == 200 for c in chunks)
            text = "".join(c.output.choices[0].message.content for c in chunks)
            record = _usage_of(server, chunks[-1].request_id)
            runs[label].append((text, record.input_tokens, record.output_tokens,
                                record.cached_tokens))
    local_cold, local_warm = runs["local"]
    assert runs["front"] == [local_cold, local_warm, local_warm, local_warm]
    assert local_warm[3] > 0


def test_openai_sdk_through_the_front(front: LiveServer, local: LiveServer) -> None:
    import openai

    results = []
    for server in (local, front):
        client = openai.OpenAI(api_key=API_KEY, base_url=server.compat_url)
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi."}], stream=True,
            max_tokens=12, stream_options={"include_usage": True},
            extra_body={"top_k": 1, "seed": 3})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert usage is not None
        results.append((text, usage.prompt_tokens, usage.completion_tokens))
    assert results[0] == results[1] and results[0][2] > 0


def test_client_disconnect_aborts_inside_the_engine_process(
        front: LiveServer, processes: list[EngineProcess]) -> None:
    before = [p.stats() for p in processes]
    body = {"model": MODEL, "input": {"prompt": "Tell a very long story."},
            "parameters": {"max_tokens": 1000, "incremental_output": True, **GREEDY}}
    with httpx.stream("POST", f"{front.native_url}/services/aigc/text-generation/generation",
                      json=body, headers={"Authorization": f"Bearer {API_KEY}",
                                          "X-DashScope-SSE": "enable"}, timeout=30) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert any(line.startswith("data:") for line in lines)
    # the response is closed: the engine process that had the request aborts it
    poll(lambda: sum(p.stats()["num_aborted"] for p in processes)
         == sum(s["num_aborted"] for s in before) + 1, what="abort reached the engine")
    poll(lambda: all(p.stats()["num_streams"] == 0 and p.stats()["num_running"] == 0
                     for p in processes), what="nothing left running")
    poll(lambda: front.app.state.service.num_inflight == 0, what="front released it")


def test_one_front_over_engine_processes_and_a_llama_server(
        processes: list[EngineProcess]) -> None:
    """The loopback topology: one front, two pools built from ``[[upstreams]]`` specs, the
    two engine processes (kind dashserve) and llama.cpp's real llama-server (kind llamacpp);
    both SDKs answer with usage through both, and every answer has its usage record."""
    import openai

    from bench.checkpoints import bench_checkpoint
    from bench.peers import llamacpp
    from tests.upstream.test_sdk_front import need_llama_server

    need_llama_server()
    ckpt = bench_checkpoint("qwen3-tiny")
    port = free_port()
    with llamacpp.start_llama_server(llamacpp.ensure_gguf(ckpt), port, slots=2, threads=1,
                                     ctx_per_slot=1024):
        specs = [UpstreamSpec(name=MODEL, kind="dashserve", api_key=SECRET,
                              urls=tuple(p.url for p in processes)),
                 UpstreamSpec(name="qwen-max", kind="llamacpp", tokenizer=str(ckpt),
                              urls=(f"http://127.0.0.1:{port}",), max_model_len=1024)]
        server = start_server(build_pools(specs))  # type: ignore[arg-type]
        try:
            client = openai.OpenAI(api_key=API_KEY, base_url=server.compat_url)
            for model in (MODEL, "qwen-max"):
                r = _dashscope(server, model=model, result_format="message", max_tokens=8,
                               messages=[{"role": "user", "content": PROMPT}], **GREEDY)
                assert r.status_code == 200, r
                record = _usage_of(server, r.request_id)
                assert (record.model, record.input_tokens, record.output_tokens) == (
                    model, r.usage.input_tokens, r.usage.output_tokens)
                assert 1 <= r.usage.output_tokens <= 8
                chat = client.chat.completions.create(
                    model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}],
                    extra_body={"top_k": 1})
                assert chat.usage is not None and chat.usage.completion_tokens >= 1
        finally:
            server.stop()


def test_killing_an_engine_mid_stream_is_a_dashscope_error(
        front: LiveServer, processes: list[EngineProcess]) -> None:
    import dashscope

    stream = dashscope.Generation.call(
        model=MODEL, api_key=API_KEY, base_address=front.native_url, prompt="Go on forever.",
        stream=True, incremental_output=True, max_tokens=1000, **GREEDY)
    first = next(stream)
    assert first.status_code == 200
    serving = [p for p in processes if p.stats()["num_streams"] == 1]
    assert len(serving) == 1
    serving[0].proc.send_signal(signal.SIGKILL)
    rest = list(stream)  # ends: no hang
    assert rest and rest[-1].status_code == 503 and rest[-1].code == "ModelUnavailable"
    record = _usage_of(front, first.request_id)
    assert record.status_code == 503 and record.output_tokens >= 1
    poll(lambda: front.app.state.service.num_inflight == 0, what="front released it")
    # the next requests go to the engine still running
    for _ in range(2):
        r = _dashscope(front, prompt="hi", max_tokens=4, **GREEDY)
        assert r.status_code == 200, r
