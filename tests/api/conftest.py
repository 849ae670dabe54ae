"""App and client fixtures for the HTTP tests: FakeEngine behind the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from dashserve.app import create_app
from dashserve.config import Settings
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate

AUTH = {"Authorization": "Bearer sk-test"}
NATIVE = "/api/v1/services/aigc/text-generation/generation"
MULTIMODAL = "/api/v1/services/aigc/multimodal-generation/generation"
CHAT = "/compatible-mode/v1/chat/completions"
NAMES = ("qwen-plus", "qwen-max", "qwen3-0.6b", "qwen3-vl-plus")


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def gate() -> RecordingGate:
    return RecordingGate()


@pytest.fixture
def make_client(gate: RecordingGate) -> Callable[..., httpx.AsyncClient]:
    """``make_client(engines=None, **settings)``: a client for a fresh app."""

    def factory(engines: dict[str, Any] | None = None, **settings: Any) -> httpx.AsyncClient:
        app = create_app(Settings(**settings), engines, gate)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://test", headers=AUTH)
        client.app = app  # type: ignore[attr-defined]
        return client

    return factory


@pytest.fixture
async def client(make_client: Callable[..., httpx.AsyncClient],
                 engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client({name: engine for name in NAMES}) as c:
        yield c


def native_body(model: str = "qwen-plus", content: str = "hi", **parameters: Any) -> dict[str, Any]:
    return {"model": model, "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": parameters}


def chat_body(model: str = "qwen-plus", content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}
