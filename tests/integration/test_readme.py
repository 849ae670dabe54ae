"""The README's tour (its curl and Python blocks) runs against a live server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import API_KEY, LiveServer

README = Path(__file__).parents[2] / "README.md"
README_URL = "http://127.0.0.1:8000"


def blocks(language: str) -> list[str]:
    text = README.read_text("utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def localize(code: str, live: LiveServer) -> str:
    return code.replace(README_URL, live.base_url).replace("sk-local", API_KEY)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl(live: LiveServer) -> None:
    tour = [b for b in blocks("bash") if b.lstrip().startswith("curl")]
    assert len(tour) == 2
    for code in tour:
        out = subprocess.run(["bash", "-c", localize(code, live)], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        assert "Hello from dashserve!" in out


def test_readme_python(live: LiveServer, tmp_path: Path) -> None:
    tour = [b for b in blocks("python") if README_URL in b]
    assert len(tour) == 2
    env = {**os.environ, "NO_PROXY": "127.0.0.1"}
    for i, code in enumerate(tour):
        script = tmp_path / f"tour{i}.py"
        script.write_text(localize(code, live), "utf-8")
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             timeout=60, check=True, env=env).stdout
        assert out.count("Hello from dashserve!") == 2, out


def test_readme_offline_llm(qwen3_tiny_dir: Path, tmp_path: Path) -> None:
    """The offline-API block runs on a tiny checkpoint in place of the one it names."""
    (code,) = [b for b in blocks("python") if "from dashserve import LLM" in b]
    script = tmp_path / "offline.py"
    script.write_text(code.replace("/tmp/qwen3-tiny", str(qwen3_tiny_dir)), "utf-8")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    # the block prints the text, the prompt size and the finish reason
    printed = re.fullmatch(r"(.*) (\d+) (?:FinishReason\.)?(\w+)\n", out, flags=re.S)
    assert printed, out
    assert int(printed[2]) == 1  # "Hello" is one token
    assert printed[3].lower() in ("stop", "length") and printed[1].strip(), out
