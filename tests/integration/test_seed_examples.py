"""The documentation's own examples (tests/integration/seed_examples) against a live server.

Only the base URL and the API key change: the dashscope examples read
``DASHSCOPE_HTTP_BASE_URL`` and ``DASHSCOPE_API_KEY`` from the environment; in the others
the literal public host is replaced by the local server. All run in parallel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import API_KEY, LiveServer

EXAMPLES = Path(__file__).parent / "seed_examples"
PUBLIC_HOST = "https://dashscope.aliyuncs.com"
FULL = "Hello from dashserve!"

# example file -> text its output must contain (and how many times)
EXPECTED: dict[str, tuple[str, int]] = {
    "s000_openai_quickstart.py": (FULL, 1),
    "s000_dashscope_quickstart.py": (FULL, 1),
    "s000_async_openai.py": (f"模型回复: {FULL}", 3),
    "s000_aio_generation.py": (f"模型回复: {FULL}", 3),
    "s000_curl_compat.sh": (f'"content":"{FULL}"', 1),
    "s000_curl_native.sh": (f'"content":"{FULL}"', 1),
    "s001_generation.py": (f'"content": "{FULL}"', 1),
    "s001_generation_stream.py": ('"finish_reason": "stop"', 1),
    "s001_curl_stream.sh": ('"finish_reason":"stop"', 1),
    "s001_aio_generation.py": (f'"content": "{FULL}"', 1),
    "s002_hello_qwen.py": (FULL, 1),
    "s004_generation.py": (f'"content": "{FULL}"', 1),
}


def test_every_example_is_listed() -> None:
    found = {p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")}
    assert found == set(EXPECTED)


def _command(path: Path, live: LiveServer, workdir: Path) -> list[str]:
    source = path.read_text("utf-8").replace(PUBLIC_HOST, live.base_url)
    copy = workdir / path.name
    copy.write_text(source, "utf-8")
    if path.suffix == ".sh":
        return ["bash", str(copy)]
    return [sys.executable, str(copy)]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_seed_examples_run_unchanged(live: LiveServer, tmp_path: Path) -> None:
    env = {**os.environ, "DASHSCOPE_API_KEY": API_KEY,
           "DASHSCOPE_HTTP_BASE_URL": live.native_url, "NO_PROXY": "127.0.0.1,localhost"}
    procs = {name: subprocess.Popen(_command(EXAMPLES / name, live, tmp_path), env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    cwd=tmp_path)
             for name in EXPECTED}
    failures = []
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        expected, count = EXPECTED[name]
        if proc.returncode != 0 or out.count(expected) != count or "错误信息" in out:
            failures.append(f"{name}: rc={proc.returncode}\n{out[-800:]}\n{err[-800:]}")
    assert not failures, "\n\n".join(failures)


def test_stream_example_prints_deltas(live: LiveServer, tmp_path: Path) -> None:
    env = {**os.environ, "DASHSCOPE_API_KEY": API_KEY,
           "DASHSCOPE_HTTP_BASE_URL": live.native_url}
    out = subprocess.run(_command(EXAMPLES / "s001_generation_stream.py", live, tmp_path),
                         env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    for piece in ('"content": "Hello"', '"content": " from"', '"content": "!"'):
        assert piece in out
