"""``dashserve serve`` with no model, as a new user runs it: the demo model is made, warmed up,
answers the seed examples (which set no max_tokens) with short answers that end, and every
request leaves one log line whose request id the access line carries too.

The demo is made at the ``qwen3-tiny`` preset (``--demo-preset``) rather than the 0.6B shape,
which would take minutes to make and decode on CI: the same demo path (made once, marked
with the demo's default output length, warmed up before /health says 200), smaller weights.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dashserve.serve_cmd import DEMO_MAX_NEW_TOKENS
from tests.integration.conftest import free_port
from tests.utils.http import get_json

EXAMPLES = Path(__file__).parent / "seed_examples"
PUBLIC_HOST = "https://dashscope.aliyuncs.com"
KEY = "sk-demo-test-1"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@dataclass
class DemoServer:
    base_url: str
    proc: subprocess.Popen[str]
    log_path: Path
    health_seen: list[dict[str, object]]

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for line in self.log_path.read_text("utf-8").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    tmp = tmp_path_factory.mktemp("demo")
    port = free_port()
    env = {**os.environ, "DASHSERVE_DATA_DIR": str(tmp / "data"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log_path = tmp / "server.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashserve", "serve", "--demo-preset", "qwen3-tiny",
             "--port", str(port), "--api-key", KEY, "--log-format", "json"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    server = DemoServer(f"http://127.0.0.1:{port}", proc, log_path, [])
    try:
        deadline = time.monotonic() + 120
        status = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, health = get_json(server.base_url + "/health")
            except OSError:
                time.sleep(0.1)
                continue
            server.health_seen.append(health)
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200, log_path.read_text()[-3000:]
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _run_example(name: str, demo: DemoServer, workdir: Path) -> str:
    source = (EXAMPLES / name).read_text("utf-8").replace(PUBLIC_HOST, demo.base_url)
    copy = workdir / name
    copy.write_text(source, "utf-8")
    command = ["bash", str(copy)] if name.endswith(".sh") else [sys.executable, str(copy)]
    env = {**os.environ, "DASHSCOPE_API_KEY": KEY,
           "DASHSCOPE_HTTP_BASE_URL": demo.base_url + "/api/v1",
           "NO_PROXY": "127.0.0.1,localhost"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                          cwd=workdir)
    assert done.returncode == 0 and "错误信息" not in done.stdout, done.stdout + done.stderr
    return done.stdout


def test_seed_examples_end_on_their_own(demo: DemoServer, tmp_path: Path) -> None:
    out = _run_example("s001_generation.py", demo, tmp_path)
    answer = json.loads(out[out.index("{"):])
    assert answer["output"]["choices"][0]["finish_reason"] == "stop"
    assert 1 <= answer["usage"]["output_tokens"] < DEMO_MAX_NEW_TOKENS
    out = _run_example("s000_curl_compat.sh", demo, tmp_path)
    answer = json.loads(out)
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert 1 <= answer["usage"]["completion_tokens"] < DEMO_MAX_NEW_TOKENS
    out = _run_example("s001_generation_stream.py", demo, tmp_path)  # on its own or capped
    last = json.loads(out.strip().splitlines()[-1])
    assert last["output"]["choices"][0]["finish_reason"] in ("stop", "length")
    assert last["usage"]["output_tokens"] <= DEMO_MAX_NEW_TOKENS
    _run_example("s000_aio_generation.py", demo, tmp_path)


def _chat(demo: DemoServer, **body: object) -> dict[str, object]:
    data = json.dumps({"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}],
                       **body}).encode()
    request = urllib.request.Request(
        demo.base_url + "/compatible-mode/v1/chat/completions", data=data,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        return json.loads(r.read())


def test_default_output_caps_what_never_ends(demo: DemoServer) -> None:
    """Greedy decoding can loop without an ending token: the demo's default output length
    ends it; a request's own max_tokens is kept, above that default too."""
    capped = _chat(demo, temperature=0)
    assert capped["usage"]["completion_tokens"] == DEMO_MAX_NEW_TOKENS  # type: ignore[index]
    longer = _chat(demo, temperature=0, max_tokens=DEMO_MAX_NEW_TOKENS + 20)
    assert longer["usage"]["completion_tokens"] == DEMO_MAX_NEW_TOKENS + 20  # type: ignore[index]


def test_healthy_only_after_warm_up(demo: DemoServer) -> None:
    lines = demo.log_lines()
    messages = [str(line["message"]) for line in lines]
    warmed = next(i for i, m in enumerate(messages) if m.startswith("warmed up in"))
    ready = next(i for i, m in enumerate(messages) if m.startswith("ready: serving"))
    assert warmed < ready
    stages = [m for m in messages if "making the demo model" in m or "loading weights" in m]
    assert any("making the demo model: layers" in m for m in stages)
    assert any(re.search(r"loading weights \[[#.]+\] \d+/\d+", m) for m in stages)
    assert any(re.search(r"loading weights \[#+\] (\d+)/\1", m) for m in stages)  # all of them
    assert any("warming up" in m for m in messages)
    for health in demo.health_seen[:-1]:
        assert health["status"] == "loading" and health["detail"]


def test_one_log_line_per_request_with_the_access_line(demo: DemoServer) -> None:
    body = json.dumps({"model": "qwen-max", "input": {"prompt": "hello"},
                       "parameters": {"max_tokens": 4}}).encode()
    request = urllib.request.Request(
        demo.base_url + "/api/v1/services/aigc/text-generation/generation", data=body,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
                 "X-DashScope-WorkSpace": "default"})  # static keys: one workspace
    with urllib.request.urlopen(request, timeout=60) as r:
        request_id = r.headers["x-request-id"]
        assert json.loads(r.read())["usage"]["output_tokens"] == 4
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in demo.log_lines() if line.get("request_id") == request_id]
        if len(lines) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    finished = [line for line in lines if str(line["message"]).startswith("request ")]
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert len(finished) == 1 and len(access) == 1, lines
    line = finished[0]
    assert (line["model"], line["status_code"], line["workspace"]) == ("qwen-max", 200, "default")
    assert line["output_tokens"] == 4 and line["input_tokens"] > 0
    assert line["cached_tokens"] == 0 and line["finish_reason"] == "length"
    assert line["ttft_ms"] is not None and line["duration_ms"] >= line["ttft_ms"]
    assert line["key"] and KEY not in demo.log_path.read_text()  # the key's id, not its secret
    assert "POST /api/v1/services/aigc/text-generation/generation" in str(access[0]["message"])


def test_the_vision_demo_answers_images(demo: DemoServer) -> None:
    """The image examples of the docs name qwen3-vl-plus: the vision demo serves it."""
    import base64
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(png, "PNG")
    url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    answer = _chat(demo, model="qwen3-vl-plus", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "图中描绘的是什么景象？"}]}])
    usage = answer["usage"]
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")  # type: ignore[index]
    assert usage["prompt_tokens_details"]["image_tokens"] > 2  # type: ignore[index]
    assert usage["completion_tokens"] <= DEMO_MAX_NEW_TOKENS  # type: ignore[index]
