"""The SDKs through a live front over an upstream pool: two fake llama-servers, and a real
llama.cpp ``llama-server`` (token ids both ways).

The real server needs the C++ build of ``python bench/peers/llamacpp.py build`` (cmake,
several minutes); its cases are skipped until then (and fail under ``.ci/run``, which
builds it). Its model is the random-weight ``qwen3-tiny`` checkpoint, converted to GGUF
once (cached beside the build).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashserve.upstream.build import build_pool
from dashserve.upstream.config import UpstreamSpec
from tests.integration.conftest import API_KEY, LiveServer, free_port, start_server
from tests.upstream.conftest import ROOT, FakeUpstream, wait_until


def _built() -> bool:
    from bench.peers.llamacpp import built_server

    info = built_server()
    return info is not None and info.get("server_kind") == "cpp"


NOT_BUILT = "llama-server is not built: run `python bench/peers/llamacpp.py build`"
# .ci/run builds llama-server and sets this, so that there a missing build fails the run.
REQUIRE_BUILT = os.environ.get("DASHSERVE_REQUIRE_LLAMA_SERVER", "") not in ("", "0")


def need_llama_server() -> None:
    """Skip a test of the real llama-server when it is not built (fail where it must be)."""
    if _built():
        return
    if REQUIRE_BUILT:
        pytest.fail(NOT_BUILT)
    pytest.skip(NOT_BUILT)


MESSAGES = [{"role": "system", "content": "You are a helpful assistant. " * 6},
            {"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module", params=["fake", "llamacpp"])
def front(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    from bench.checkpoints import bench_checkpoint

    ckpt = bench_checkpoint("qwen3-tiny")
    if request.param == "fake":
        yield from _over_fakes(ckpt)
        return
    need_llama_server()
    from bench.peers import llamacpp

    gguf = llamacpp.ensure_gguf(ckpt)
    port = free_port()
    with llamacpp.start_llama_server(gguf, port, slots=2, threads=1, ctx_per_slot=1024):
        yield from _serve([f"http://127.0.0.1:{port}"], ckpt)


def _over_fakes(ckpt: Path) -> Iterator[LiveServer]:
    fakes = []
    for _ in range(2):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "tests.upstream.fake_upstream",
                                 "--port", str(port), "--num-tokens", "64",
                                 "--token-delay-ms", "5"], cwd=ROOT)
        fakes.append(FakeUpstream(f"http://127.0.0.1:{port}", proc))
    try:
        for fake in fakes:
            wait_until(fake.is_up, what="fake upstream")
        for server in _serve([f.url for f in fakes], ckpt):
            server.fakes = fakes  # type: ignore[attr-defined]
            yield server
    finally:
        for fake in fakes:
            fake.kill()


def _serve(urls: list[str], ckpt: Path) -> Iterator[LiveServer]:
    spec = UpstreamSpec(name="qwen-plus", kind="llamacpp", urls=tuple(urls), max_model_len=1024)
    server = start_server({"qwen-plus": build_pool(spec, ckpt)})  # type: ignore[dict-item]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dashscope_sdk(front: LiveServer) -> Iterator[Any]:
    import dashscope

    saved = dashscope.base_http_api_url, dashscope.api_key
    dashscope.base_http_api_url = front.native_url
    dashscope.api_key = API_KEY
    yield dashscope
    dashscope.base_http_api_url, dashscope.api_key = saved


def test_dashscope_sdk_stream_and_call_agree_token_for_token(dashscope_sdk: Any) -> None:
    args: dict[str, Any] = {"model": "qwen-plus", "messages": MESSAGES, "result_format": "message",
                            "max_tokens": 16, "temperature": 0, "seed": 1}
    whole = dashscope_sdk.Generation.call(**args)
    assert whole.status_code == 200, whole
    text = whole.output.choices[0].message.content
    assert text and whole.usage.output_tokens == 16
    assert whole.output.choices[0].finish_reason == "length"
    chunks = list(dashscope_sdk.Generation.call(**args, stream=True, incremental_output=True))
    assert all(c.status_code == 200 for c in chunks)
    assert "".join(c.output.choices[0].message.content for c in chunks) == text
    assert chunks[-1].usage.input_tokens == whole.usage.input_tokens


def test_openai_sdk_repeated_prefix_is_served_from_the_slot_cache(front: LiveServer) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=front.compat_url, api_key=API_KEY)
    usages = []
    for question in ("Tell me about the sea.", "Tell me about the sky."):
        stream = client.chat.completions.create(
            model="qwen-plus", max_tokens=8, temperature=0, stream=True,
            stream_options={"include_usage": True},
            messages=[MESSAGES[0], {"role": "user", "content": question}])
        chunks = list(stream)
        usages.append(chunks[-1].usage)
    assert usages[0] is not None and usages[1] is not None
    assert usages[1].completion_tokens == 8
    details = usages[1].prompt_tokens_details
    assert details is not None and (details.cached_tokens or 0) > 0


def test_stop_string_is_matched_at_the_front(dashscope_sdk: Any) -> None:
    args: dict[str, Any] = {"model": "qwen-plus", "messages": MESSAGES, "result_format": "message",
                            "max_tokens": 24, "temperature": 0, "seed": 1}
    text = dashscope_sdk.Generation.call(**args).output.choices[0].message.content
    stop = text[len(text) // 2:len(text) // 2 + 2]
    cut = dashscope_sdk.Generation.call(**args, stop=[stop])
    assert cut.output.choices[0].message.content == text[:text.index(stop)]
    assert cut.output.choices[0].finish_reason == "stop"


def test_a_client_that_disconnects_closes_the_upstream_stream(front: LiveServer) -> None:
    import httpx

    fakes: list[FakeUpstream] | None = getattr(front, "fakes", None)
    if fakes is None:
        pytest.skip("counts disconnects on the fake upstreams")
    before = sum(f.stats()["disconnected"] for f in fakes)
    body = {"model": "qwen-plus", "stream": True, "max_tokens": 64,
            "messages": [{"role": "user", "content": "a long answer please"}]}
    with httpx.Client(timeout=30) as c, c.stream(
            "POST", front.compat_url + "/chat/completions", json=body,
            headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        for line in r.iter_lines():
            if '"content"' in line:
                break  # leave after the first token: the connection closes
    wait_until(lambda: sum(f.stats()["disconnected"] for f in fakes) == before + 1,
               timeout_s=10, what="the upstream stream closed")
    assert all(f.stats()["active"] == 0 for f in fakes)
