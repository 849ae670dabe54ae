"""Long-document chat end to end: the openai SDK uploads a PDF, the seed's qwen-long example
(``fileid://``, run unchanged but for the id) answers 200 on the real engine, the document is
billed as input, and a second question about it is served from the prefix cache."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.engine.async_engine import AsyncEngine
from dashserve.platform.blobs import LocalBlobStore
from dashserve.platform.files import FileService
from dashserve.platform.state import PlatformSettings, prepare_platform
from tests.integration.conftest import API_KEY, free_port
from tests.utils.documents import pdf_bytes

SEED = Path(__file__).parent / "long_documents" / "s001_qwen_long.py"
LINES = [f"Section {i}: the committee approved budget line {i * 37 % 101} for year {2000 + i}."
         for i in range(24)]


@dataclass
class Live:
    base_url: str
    engine: AsyncEngine


@pytest.fixture(scope="module")
def live(qwen3_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("long-docs")
    engine = AsyncEngine.from_pretrained(str(qwen3_tiny_dir), dtype="fp32", max_model_len=1024)
    platform = prepare_platform(PlatformSettings(data_dir=root, static_keys=(API_KEY,)))
    files = FileService(platform.store, LocalBlobStore(root / "files"))
    app = create_app(Settings(data_dir=root), {"qwen-long": engine},  # type: ignore[dict-item]
                     platform.gate, files=files)
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    yield Live(f"http://127.0.0.1:{config.port}", engine)
    server.should_exit = True
    thread.join(30)


def test_seed_qwen_long_example_with_an_uploaded_pdf(live: Live, tmp_path: Path) -> None:
    import openai

    client = openai.OpenAI(api_key=API_KEY, base_url=live.base_url + "/compatible-mode/v1",
                           max_retries=0)
    uploaded = client.files.create(file=("minutes.pdf", pdf_bytes(LINES)),
                                   purpose="file-extract")
    assert uploaded.id.startswith("file-fe-") and uploaded.status == "processed"
    document_tokens = len(live.engine.tokenizer.encode("\n".join(LINES)))

    script = tmp_path / SEED.name
    script.write_text(f"FILE_ID = {uploaded.id!r}\n" + SEED.read_text("utf-8"), "utf-8")
    env = {**os.environ, "DASHSCOPE_API_KEY": API_KEY, "NO_PROXY": "127.0.0.1,localhost",
           "DASHSCOPE_HTTP_BASE_URL": live.base_url + "/api/v1"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert '"status_code": 200' in done.stdout, done.stdout
    input_tokens = int(done.stdout.split('"input_tokens": ')[1].split(",")[0].split("}")[0])
    assert input_tokens > document_tokens

    def ask(question: str) -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(model="qwen-long", max_tokens=4, messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "system", "content": f"fileid://{uploaded.id}"},
            {"role": "user", "content": question}])

    first = ask("Which budget line was approved in 2005?")
    second = ask("And in 2010?")
    assert first.usage.prompt_tokens > document_tokens
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= document_tokens - 16 and cached % 16 == 0  # whole KV blocks of the doc

