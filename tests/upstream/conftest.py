"""Fake upstream processes on loopback and pools over them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dashserve.tokenizer import Tokenizer
from dashserve.upstream.build import build_pool, load_tokenizer
from dashserve.upstream.config import UpstreamSpec
from dashserve.upstream.pool import Pool
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_until(check: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds (fails the test after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class FakeUpstream:
    url: str
    proc: subprocess.Popen[bytes]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_stats", timeout=5) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def mode(self, **values: Any) -> None:
        req = urllib.request.Request(self.url + "/_mode", data=json.dumps(values).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def is_up(self) -> bool:
        """Answering health checks (fails the test at once when the process has exited)."""
        code = self.proc.poll()
        assert code is None, f"fake upstream {self.url} exited with {code}"
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False


@pytest.fixture
def fake_upstreams() -> Iterator[Callable[..., list[FakeUpstream]]]:
    """``start(n, num_tokens=8, token_delay_ms=0)``: n fake upstream processes."""
    started: list[FakeUpstream] = []

    def start(n: int, num_tokens: int = 8, token_delay_ms: float = 0.0) -> list[FakeUpstream]:
        batch = []
        for _ in range(n):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.upstream.fake_upstream", "--port", str(port),
                 "--num-tokens", str(num_tokens), "--token-delay-ms", str(token_delay_ms)],
                cwd=ROOT)
            batch.append(FakeUpstream(f"http://127.0.0.1:{port}", proc))
        started.extend(batch)
        for up in batch:
            wait_until(up.is_up, what=f"fake upstream {up.url}")
        return batch

    yield start
    for up in started:
        up.kill()


@pytest.fixture(scope="session")
def served_tokenizer(qwen3_tiny_dir: Path) -> Tokenizer:
    """The tiny model's tokenizer, prepared for serving once (it takes seconds)."""
    return load_tokenizer(qwen3_tiny_dir)


@pytest.fixture
def make_pool(qwen3_tiny_dir: Path, served_tokenizer: Tokenizer) -> Callable[..., Pool]:
    """``make_pool(urls, kind="llamacpp", **spec_fields)``: a pool with fast health probes."""

    def factory(urls: list[str], kind: str = "llamacpp", **fields: Any) -> Pool:
        spec = UpstreamSpec(name="qwen-plus", kind=kind, urls=tuple(urls),
                            probe_interval_s=fields.pop("probe_interval_s", 0.05), **fields)
        return build_pool(spec, qwen3_tiny_dir, served_tokenizer)

    return factory


async def until(check: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """``wait_until`` for async tests: polls without blocking the event loop in between."""
    import asyncio

    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
