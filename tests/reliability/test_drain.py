"""SIGTERM drain: requests in flight finish, while the port stays open and answers 503."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import uvicorn

from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.serve_cmd import DrainingServer
from tests.reliability.conftest import CHAT, free_port
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate

AUTH = {"Authorization": "Bearer sk-test"}


def test_sigterm_drains_and_health_answers_503_meanwhile() -> None:
    engine = FakeEngine(script=[f" w{i}" for i in range(40)], token_delay_s=0.05)
    app = create_app(Settings(), {"qwen-plus": engine}, RecordingGate())
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=20)
    server = DrainingServer(config, app.state.registry, app.state.service)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    result: dict[str, object] = {}

    def long_request() -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            r = client.post(CHAT, headers=AUTH, json={
                "model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]})
            result["status"], result["text"] = r.status_code, r.json()["choices"][0][
                "message"]["content"]

    worker = threading.Thread(target=long_request)
    worker.start()
    while app.state.service.num_inflight == 0:
        time.sleep(0.01)
    server.handle_exit(signal.SIGTERM, None)
    time.sleep(0.3)
    with httpx.Client(base_url=base, timeout=10) as client:
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "draining"
        refused = client.post(CHAT, headers=AUTH, json={
            "model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "service_unavailable"
    worker.join(30)
    assert result["status"] == 200 and result["text"] == "".join(engine.script)
    thread.join(30)
    assert not thread.is_alive()
