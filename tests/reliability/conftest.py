"""A live dashserve on a loopback port (uvicorn in a thread) for the reliability suite.

``DASHSERVE_RELIABILITY_LONG=1`` selects the long mode (bigger storms and fuzzing runs),
meant to be run by hand.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.platform.gate import Gate
from tests.ports import free_port

LONG = os.environ.get("DASHSERVE_RELIABILITY_LONG", "") not in ("", "0")
NATIVE = "/api/v1/services/aigc/text-generation/generation"
CHAT = "/compatible-mode/v1/chat/completions"


@dataclass
class Live:
    app: Any
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)


def serve_in_thread(app: Any) -> Live:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-dashserve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live server did not start")
        time.sleep(0.01)
    return Live(app, server, thread, port)


def kv_pool_is_empty(engine: Any) -> bool:
    """Every KV block of ``engine`` (an AsyncEngine) free and unreferenced."""
    bm = engine.engine.block_manager
    return bm.num_free_blocks == bm.num_blocks and all(b.ref_count == 0 for b in bm.blocks)


def start_live(engines: dict[str, Any], gate: Gate, **settings: Any) -> Live:
    return serve_in_thread(create_app(Settings(**settings), engines, gate))
