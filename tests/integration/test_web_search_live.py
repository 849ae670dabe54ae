"""Web search and inspection against a live server, through the dashscope and openai SDKs.

The seed's web-search example runs unchanged but for ``search_options`` (forced search with
sources) against the local index; a fake SearXNG on loopback counts the queries it gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.integration.conftest import API_KEY, LiveServer, start_server
from tests.utils.fake_engine import FakeEngine

# Seed 001 (联网搜索, Python), with search_options added as the check asks.
SEED_SEARCH_EXAMPLE = """\
import os
import dashscope
messages = [
    {'role': 'system', 'content': 'You are a helpful assistant.'},
    {'role': 'user', 'content': '杭州明天天气是什么?'}
    ]
response = dashscope.Generation.call(
    # 若没有配置环境变量,请用百炼 API Key 将下行替换为:api_key="sk-xxx",
    api_key=os.getenv('DASHSCOPE_API_KEY'),
    model="qwen-plus", # 此处以 qwen-plus 为例,可按需更换模型名称。
    messages=messages,
    enable_search=True,
    search_options={"forced_search": True, "enable_source": True},
    result_format='message'
    )
print(response)
"""


class FakeSearxng:
    """SearXNG's JSON API on 127.0.0.1, recording every query."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                params = parse_qs(url.query)
                if url.path != "/search" or params.get("format") != ["json"]:
                    self.send_error(404)
                    return
                outer.queries.append(params["q"][0])
                body = json.dumps({"query": params["q"][0], "results": [
                    {"url": f"https://searx-{i}.example/page", "title": f"Searx result {i}",
                     "content": f"text {i}", "engine": "fake"} for i in (1, 2, 3)]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def searx() -> Iterator[FakeSearxng]:
    fake = FakeSearxng()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def local_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("search-data")
    engine = FakeEngine(token_delay_s=0.002)
    server = start_server({"qwen-plus": engine}, data_dir=str(data),
                          search={"providers": ["local"]})
    index = server.app.state.search.index
    index.add("杭州天气预报", "https://weather.example/hangzhou",
              "杭州明天天气:晴,最高气温 25 度。", site_name="天气网")
    index.add("Hangzhou travel", "https://travel.example/hz", "杭州明天西湖游船正常开放。")
    index.add("Unrelated", "https://other.example", "nothing to see")
    server.app.state.inspector.store.add("*", "keyword", "forbidden")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def searx_live(searx: FakeSearxng, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("searx-data")
    server = start_server({"qwen-plus": FakeEngine(token_delay_s=0.002)}, data_dir=str(data),
                          search={"providers": ["searxng"], "searxng_url": searx.url})
    yield server
    server.stop()


def test_seed_search_example_with_sources(local_live: LiveServer, tmp_path: Path) -> None:
    script = tmp_path / "web_search.py"
    script.write_text(SEED_SEARCH_EXAMPLE, "utf-8")
    env = {**os.environ, "DASHSCOPE_API_KEY": API_KEY,
           "DASHSCOPE_HTTP_BASE_URL": local_live.native_url,
           "NO_PROXY": "127.0.0.1,localhost"}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    response = json.loads(out)
    assert response["status_code"] == 200
    results = response["output"]["search_info"]["search_results"]
    assert [r["index"] for r in results] == [1, 2]
    assert results[0]["title"] == "杭州天气预报" and results[0]["site_name"] == "天气网"
    assert results[0]["url"] == "https://weather.example/hangzhou"
    assert response["usage"]["plugins"]["search"]["count"] == 1


def test_forced_search_queries_searxng_once_per_request(searx_live: LiveServer,
                                                        searx: FakeSearxng) -> None:
    import dashscope

    before = len(searx.queries)
    for question in ("first question", "second question"):
        response = dashscope.Generation.call(
            api_key=API_KEY, base_address=searx_live.native_url, model="qwen-plus",
            messages=[{"role": "user", "content": question}], result_format="message",
            enable_search=True, search_options={"forced_search": True, "enable_source": True})
        assert response.status_code == 200, response
        results = response.output["search_info"]["search_results"]
        assert [r["url"] for r in results] == [f"https://searx-{i}.example/page"
                                               for i in (1, 2, 3)]
    assert searx.queries[before:] == ["first question", "second question"]
    # model-decided search: the fake model never calls the tool, so no query is sent
    response = dashscope.Generation.call(
        api_key=API_KEY, base_address=searx_live.native_url, model="qwen-plus",
        messages=[{"role": "user", "content": "third"}], result_format="message",
        enable_search=True)
    assert response.status_code == 200 and len(searx.queries) == before + 2


def test_prepend_search_result_stream_through_the_sdk(searx_live: LiveServer,
                                                      searx: FakeSearxng) -> None:
    import dashscope

    before = len(searx.queries)
    chunks = list(dashscope.Generation.call(
        api_key=API_KEY, base_address=searx_live.native_url, model="qwen-plus",
        messages=[{"role": "user", "content": "stream it"}], result_format="message",
        stream=True, incremental_output=True, enable_search=True,
        search_options={"forced_search": True, "enable_source": True,
                        "prepend_search_result": True}))
    assert len(searx.queries) == before + 1
    first = chunks[0]
    assert first.status_code == 200
    assert first.output["choices"][0]["message"]["content"] == ""
    assert len(first.output["search_info"]["search_results"]) == 3
    text = "".join(c.output["choices"][0]["message"]["content"] for c in chunks[1:])
    assert text == "Hello from dashserve!"


def test_openai_sdk_sources_and_inspection(local_live: LiveServer) -> None:
    import openai

    client = openai.OpenAI(api_key=API_KEY, base_url=local_live.compat_url)
    completion = client.chat.completions.create(
        model="qwen-plus", messages=[{"role": "user", "content": "杭州明天天气"}],
        extra_body={"enable_search": True,
                    "search_options": {"forced_search": True, "enable_source": True}})
    info = completion.model_dump()["search_info"]
    assert info["search_results"][0]["url"] == "https://weather.example/hangzhou"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="qwen-plus", messages=[{"role": "user", "content": "the forbidden one"}],
            extra_headers={"X-DashScope-DataInspection": '{"input":"cip","output":"cip"}'})
    assert caught.value.code == "data_inspection_failed"


def test_dashscope_sdk_inspection(local_live: LiveServer) -> None:
    import dashscope

    records = len(local_live.gate.records)
    messages = [{"role": "user", "content": "the forbidden one"}]
    response = dashscope.Generation.call(
        api_key=API_KEY, base_address=local_live.native_url, model="qwen-plus",
        messages=messages, result_format="message",
        headers={"X-DashScope-DataInspection": '{"input":"cip","output":"cip"}'})
    assert response.status_code == 400 and response.code == "DataInspectionFailed"
    assert len(local_live.gate.records) == records  # nothing billed
    response = dashscope.Generation.call(
        api_key=API_KEY, base_address=local_live.native_url, model="qwen-plus",
        messages=messages, result_format="message")
    assert response.status_code == 200
