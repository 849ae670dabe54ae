"""The real-engine image tests again, the tiny VL engines behind the token-id wire: images
preprocessed by the front cross as patch tensors, and the token counts, the answers' shape
and the cache hits stay what they are in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from dashserve.engine.async_engine import AsyncEngine
from dashserve.upstream.engine_server import tokenizer_files
from dashserve.upstream.remote_engine import RemoteEngineClient
from tests.integration.conftest import LiveServer, start_server
from tests.integration.test_vision_real import *  # noqa: F403
from tests.upstream.test_remote_wire import LiveEngine

pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def vl_live(model_dir_factory: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[LiveServer]:
    wires = {}
    for name, preset in (("qwen3-vl-plus", "qwen3-vl-tiny"),
                         ("qwen2.5-vl-7b-instruct", "qwen2.5-vl-tiny")):
        model_dir = model_dir_factory(preset)
        engine = AsyncEngine.from_pretrained(str(model_dir), dtype="fp32", max_model_len=2048)
        wires[name] = LiveEngine(engine, tokenizer_files(model_dir), None)

    async def connect() -> dict[str, RemoteEngineClient]:
        return {name: await RemoteEngineClient.connect(live.url)
                for name, live in wires.items()}

    remotes = asyncio.run(connect())
    assert all(r.model_info.vision is not None for r in remotes.values())
    server = start_server(remotes, data_dir=tmp_path_factory.mktemp("data"))  # type: ignore[arg-type]
    yield server
    server.stop()
    for live in wires.values():
        live.stop()
