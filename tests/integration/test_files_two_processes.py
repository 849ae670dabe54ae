"""Two server processes on one PostgreSQL and one files directory: a file uploaded through
one is listed, used in chat and deleted through the other, within its workspace only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.ports import free_port
from tests.utils.documents import docx_bytes

ADMIN = "sk-admin-two-processes"
NATIVE_CHAT = "/api/v1/services/aigc/text-generation/generation"


def _wait_healthy(base: str, proc: subprocess.Popen[str], timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{base} did not become healthy")


@pytest.mark.slow
def test_upload_through_one_process_use_through_the_other(
        qwen3_tiny_dir: Path, pg_url: str, tmp_path: Path) -> None:
    shared_files = tmp_path / "shared-files"
    procs: list[subprocess.Popen[str]] = []
    bases: list[str] = []
    try:
        for n in range(2):
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dashserve", "serve", "--model", str(qwen3_tiny_dir),
                 "--served-model-name", "qwen-long", "--port", str(port),
                 "--max-model-len", "1024", "--database-url", pg_url, "--admin-key", ADMIN,
                 "--data-dir", str(tmp_path / f"data-{n}"), "--files-dir", str(shared_files)],
                env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            bases.append(f"http://127.0.0.1:{port}")
        for base, proc in zip(bases, procs, strict=True):
            _wait_healthy(base, proc)
        one, two = bases
        keys = {}
        for ws, base in (("ws-a", one), ("ws-b", two)):
            r = httpx.post(base + "/admin/v1/keys", json={"workspace": ws},
                           headers={"Authorization": f"Bearer {ADMIN}"})
            assert r.status_code in (200, 201), r.text
            keys[ws] = {"Authorization": f"Bearer {r.json()['secret']}"}

        data = docx_bytes(["The shared drive is backed up nightly at 02:00."])
        r = httpx.post(one + "/compatible-mode/v1/files", headers=keys["ws-a"],
                       data={"purpose": "file-extract"}, files={"file": ("ops.docx", data)})
        assert r.status_code == 200, r.text
        file_id = r.json()["id"]

        listed = httpx.get(two + "/compatible-mode/v1/files", headers=keys["ws-a"]).json()
        assert [f["id"] for f in listed["data"]] == [file_id]
        assert httpx.get(f"{two}/compatible-mode/v1/files/{file_id}/content",
                         headers=keys["ws-a"]).content == data

        def ask(base: str, ws: str) -> httpx.Response:
            body = {"model": "qwen-long", "parameters": {"max_tokens": 2},
                    "input": {"messages": [{"role": "system", "content": f"fileid://{file_id}"},
                                           {"role": "user", "content": "When is the backup?"}]}}
            return httpx.post(base + NATIVE_CHAT, json=body, headers=keys[ws], timeout=120)

        answer = ask(two, "ws-a")
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["input_tokens"] > 15
        assert ask(two, "ws-b").status_code == 400  # another workspace's key
        assert httpx.delete(f"{two}/compatible-mode/v1/files/{file_id}",
                            headers=keys["ws-b"]).status_code == 404

        assert httpx.delete(f"{two}/compatible-mode/v1/files/{file_id}",
                            headers=keys["ws-a"]).json()["deleted"] is True
        assert httpx.get(f"{one}/compatible-mode/v1/files/{file_id}",
                         headers=keys["ws-a"]).status_code == 404
        refused = ask(one, "ws-a")  # process one saw the text, but the file is gone
        assert refused.status_code == 400 and "not found" in refused.json()["message"]
        assert not any(shared_files.iterdir())
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
