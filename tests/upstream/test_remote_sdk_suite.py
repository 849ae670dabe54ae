"""The SDK suites (dashscope and openai) and the documentation's own examples again, every
engine behind the token-id wire: each FakeEngine of the standard set serves from its own
engine server, and the front reaches it through RemoteEngineClient. The answers, errors and
usage the SDKs and the examples see must not change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashserve.upstream.engine_server import tokenizer_files
from dashserve.upstream.remote_engine import RemoteEngineClient
from tests.integration.conftest import LiveServer, dashscope_sdk, standard_engines, start_server
from tests.integration.test_dashscope_sdk import *  # noqa: F403
from tests.integration.test_openai_sdk import *  # noqa: F403
from tests.integration.test_seed_examples import *  # noqa: F403
from tests.upstream.test_remote_wire import LiveEngine

__all__ = ["dashscope_sdk"]


@pytest.fixture(scope="module")
def live(qwen3_tiny_dir: Path) -> Iterator[LiveServer]:
    files = tokenizer_files(qwen3_tiny_dir)
    fakes = standard_engines()
    servers = {id(fake): LiveEngine(fake, files, None) for fake in fakes.values()}

    async def connect() -> dict[int, RemoteEngineClient]:
        return {key: await RemoteEngineClient.connect(server.url)
                for key, server in servers.items()}

    remotes = asyncio.run(connect())
    front = start_server({name: remotes[id(fake)] for name, fake in fakes.items()},
                         sse_keepalive_s=0.1)  # type: ignore[arg-type]
    yield front
    front.stop()
    for server in servers.values():
        server.stop()
