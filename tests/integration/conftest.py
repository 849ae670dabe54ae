"""A live dashserve (uvicorn on a free loopback port, in a thread) in front of FakeEngines."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from dashserve.app import create_app
from dashserve.config import Settings
from tests.ports import free_port
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate

API_KEY = "sk-test"
# The names the seed examples use, all on one fast engine; "slow-model" pauses before
# its first token (heartbeats), "long-model" writes slowly (disconnects), "broken-model"
# fails after two tokens.
FAST_NAMES = ("qwen-plus", "qwen-max", "qwen3-0.6b", "qwen3-vl-plus", "qwen-vl-max",
              "qwen2-audio-instruct", "qwen-long")


@dataclass
class LiveServer:
    base_url: str
    app: Any
    server: uvicorn.Server
    thread: threading.Thread
    gate: RecordingGate
    engines: dict[str, FakeEngine]

    @property
    def native_url(self) -> str:
        return f"{self.base_url}/api/v1"

    @property
    def compat_url(self) -> str:
        return f"{self.base_url}/compatible-mode/v1"

    def stop(self, timeout_s: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)


def start_server(engines: dict[str, FakeEngine], **settings: Any) -> LiveServer:
    gate = RecordingGate((API_KEY,))
    app = create_app(Settings(**settings), engines, gate)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=settings.get("shutdown_grace_s", 5))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-dashserve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live server did not start")
        time.sleep(0.01)
    return LiveServer(f"http://127.0.0.1:{port}", app, server, thread, gate, engines)


def standard_engines() -> dict[str, FakeEngine]:
    fast = FakeEngine(token_delay_s=0.002)
    engines = {name: fast for name in FAST_NAMES}
    engines["slow-model"] = FakeEngine(first_token_delay_s=0.4)
    engines["long-model"] = FakeEngine(script=[f" w{i}" for i in range(400)],
                                       token_delay_s=0.01)
    engines["broken-model"] = FakeEngine(fail_after=2)
    return engines


@pytest.fixture(scope="session")
def live() -> Iterator[LiveServer]:
    server = start_server(standard_engines(), sse_keepalive_s=0.1)
    yield server
    server.stop()


@pytest.fixture
def dashscope_sdk(live: LiveServer) -> Iterator[Any]:
    """The dashscope module pointed at the live server (restored afterwards)."""
    import dashscope

    saved = dashscope.base_http_api_url, dashscope.api_key
    dashscope.base_http_api_url = live.native_url
    dashscope.api_key = API_KEY
    yield dashscope
    dashscope.base_http_api_url, dashscope.api_key = saved
