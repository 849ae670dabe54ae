"""``dashserve serve --ray --replicas 2`` on a local Ray instance: two engine replicas of a tiny
model as Ray Serve deployments answer the SDKs through the front, both take requests, and
stopping the front deletes them."""

from __future__ import annotations

import os
import re
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

from tests.integration.conftest import free_port

pytestmark = pytest.mark.slow  # a local Ray instance and two replicas start (1-2 minutes)
pytest.importorskip("ray.serve")

API_KEY = "sk-ray-test"
SECRET = "ray-wire-secret"
MODEL = "qwen-plus"


@dataclass
class RayFront:
    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def replica_urls(self) -> list[str]:
        found = re.search(r"2 Ray Serve replicas at (\S+), (\S+)", self.log.read_text())
        assert found, self.log.read_text()[-3000:]
        return [found.group(1), found.group(2)]


def replica_stats(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/stats", headers={"authorization": f"Bearer {SECRET}"}, timeout=5)
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def poll(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not reached in {timeout_s} s: {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_front(qwen3_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[RayFront]:
    tmp = tmp_path_factory.mktemp("ray-front")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "DASHSERVE_ENGINE_SECRET": SECRET, "RAY_USAGE_STATS_ENABLED": "0"}
    log = tmp / "front.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashserve", "serve", "--ray", "--replicas", "2",
             "--model", str(qwen3_tiny_dir), "--served-model-name", MODEL, "--dtype", "fp32",
             "--max-model-len", "1024", "--port", str(port), "--api-key", API_KEY,
             "--data-dir", str(tmp / "data"), "--no-console"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    front = RayFront(proc, f"http://127.0.0.1:{port}", log)

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-5000:]
        try:
            return httpx.get(f"{front.base_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        poll(ready, 480, "the front ready with its Ray replicas")
        yield front
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_two_replicas_answer_the_sdks(ray_front: RayFront) -> None:
    import dashscope
    import openai

    urls = ray_front.replica_urls()
    before = [replica_stats(u)["num_requests"] for u in urls]
    native = f"{ray_front.base_url}/api/v1"
    texts = []
    for _ in range(2):
        r = dashscope.Generation.call(model=MODEL, api_key=API_KEY, base_address=native,
                                      messages=[{"role": "user", "content": "你好"}],
                                      result_format="message", max_tokens=8, top_k=1, seed=1)
        assert r.status_code == 200, r
        assert r.usage.output_tokens == 8 and r.usage.input_tokens > 0
        texts.append(r.output.choices[0].message.content)
    assert texts[0] == texts[1]  # the same greedy answer (the repeat lands where it is cached)
    for i in range(12):  # distinct prompts spread over the idle replicas (rendezvous order:
        # all twelve on one replica has odds of 1 in 2,048)
        r = dashscope.Generation.call(model=MODEL, api_key=API_KEY, base_address=native,
                                      prompt=f"{i} ({i * 7919}) 你好", max_tokens=2)
        assert r.status_code == 200, r
    chunks = list(dashscope.Generation.call(
        model=MODEL, api_key=API_KEY, base_address=native, prompt="hi", stream=True,
        incremental_output=True, max_tokens=6))
    assert all(c.status_code == 200 for c in chunks) and chunks[-1].usage.output_tokens == 6
    client = openai.OpenAI(api_key=API_KEY, base_url=f"{ray_front.base_url}/compatible-mode/v1")
    done = client.chat.completions.create(model=MODEL, max_tokens=5,
                                          messages=[{"role": "user", "content": "hi"}])
    assert done.usage is not None and done.usage.completion_tokens == 5
    after = [replica_stats(u)["num_requests"] for u in urls]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


def test_the_local_ray_instance_outlives_the_start(ray_front: RayFront) -> None:
    # the replicas are deployed on a loader thread that has ended by now: the instance must
    # not have gone with it (Serve could then neither check nor delete the replicas)
    code = ("import ray; from ray import serve; ray.init(address='auto', log_to_driver=False); "
            "print(sorted(serve.status().applications))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=180, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert "dashserve-qwen-plus" in out.stdout, out.stderr[-3000:]


def test_stopping_the_front_deletes_the_replicas(ray_front: RayFront) -> None:
    urls = ray_front.replica_urls()
    ray_front.proc.send_signal(signal.SIGINT)
    ray_front.proc.wait(120)

    def gone(url: str) -> bool:
        try:
            httpx.get(f"{url}/health", timeout=2)
        except httpx.HTTPError:
            return True
        return False

    poll(lambda: all(gone(u) for u in urls), 60, "replicas deleted")
    assert "deleting the Ray Serve replicas" in ray_front.log.read_text()
