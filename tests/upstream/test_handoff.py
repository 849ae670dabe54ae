"""A request through a pool is on the upstream's wire before its own response is built."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from dashserve.platform.gate import Principal
from dashserve.serving.registry import ModelRegistry
from dashserve.serving.request import GenerationRequest, Message, RequestedParams
from dashserve.serving.service import GenerationService
from dashserve.upstream.pool import Pool
from tests.upstream.conftest import FakeUpstream
from tests.utils.recording_gate import RecordingGate

PRINCIPAL = Principal(key_id=None, key_prefix="sk-", workspace=None)
SelectorTransport: Any = asyncio.selector_events._SelectorSocketTransport  # type: ignore[attr-defined]


def request(rid: str) -> GenerationRequest:
    return GenerationRequest(rid, "qwen-plus", (Message("user", "Why is the sky blue?"),),
                             params=RequestedParams(max_tokens=4))


async def test_start_returns_once_the_upstream_request_is_written(
        fake_upstreams: Callable[..., list[FakeUpstream]], make_pool: Callable[..., Pool],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler builds and sends the client's response headers after ``start``: a body
    still waiting for its write then would reach the upstream that much later, and the
    first token with it."""
    (up,) = fake_upstreams(1, num_tokens=4, token_delay_ms=50)
    port = int(up.url.rsplit(":", 1)[1])
    pool = make_pool([up.url], probe_interval_s=60)  # no probe shares the connection pool
    registry = ModelRegistry()
    registry.install({"qwen-plus": pool})
    service = GenerationService(registry, RecordingGate())
    assert isinstance(asyncio.get_running_loop(), asyncio.SelectorEventLoop)
    try:
        warm = await service.start(request("warm"), PRINCIPAL)  # a keep-alive connection
        await warm.complete(None)
        await warm.aclose()
        written: list[bytes] = []
        write = SelectorTransport.write  # writelines joins its lines and calls write

        def recording_write(self: Any, data: Any) -> None:
            if self.get_extra_info("peername", ("", 0))[1] == port:
                written.append(bytes(data))
            write(self, data)

        monkeypatch.setattr(SelectorTransport, "write", recording_write)
        for i in range(3):
            run = await service.start(request(f"r{i}"), PRINCIPAL)
            sent = b"".join(written)
            written.clear()
            assert sent.startswith(b"POST /completion ") and sent.endswith(b"}"), sent[:80]
            done = await run.complete(None)
            await run.aclose()
            assert done.usage.output_tokens == 4
    finally:
        await pool.shutdown()
