"""enable_search and search_options over both APIs (FakeEngine behind the real app)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashserve.search.config import SearchBackends, SearchConfig
from dashserve.search.results import SearchFailed, SearchResult
from dashserve.serving.web_search import WebSearch
from tests.api.conftest import CHAT, NATIVE, chat_body, native_body
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate
from tests.utils.sse import native_events, openai_chunks

QUESTION = "杭州明天天气是什么?"
SOURCES = {"forced_search": True, "enable_source": True}


class FakeProvider:
    """Counts queries; answers fixed results, or fails."""

    name = "fake"

    def __init__(self, results: list[SearchResult], fail: bool = False) -> None:
        self.results = results
        self.fail = fail
        self.queries: list[tuple[str, int]] = []

    async def search(self, query: str, k: int) -> list[SearchResult]:
        self.queries.append((query, k))
        if self.fail:
            raise SearchFailed("the fake provider is down")
        return self.results[:k]

    async def aclose(self) -> None:
        return None


def hits(prefix: str, n: int) -> list[SearchResult]:
    return [SearchResult(f"{prefix} {i}", f"https://{prefix}.example/{i}", f"{prefix} text {i}")
            for i in range(1, n + 1)]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def app_client(make_client: Callable[..., httpx.AsyncClient], engine: FakeEngine,
                     tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    search = {"providers": ["local"], "index_path": str(tmp_path / "index.sqlite3")}
    async with make_client({"qwen-plus": engine, "qwen3-max": engine}, data_dir=tmp_path,
                           search=search) as c:
        index = c.app.state.search.index  # type: ignore[attr-defined]
        index.add("Hangzhou weather", "https://weather.example/hz",
                  "Tomorrow Hangzhou: sunny, 25 degrees. 杭州明天天气晴。",
                  site_name="Weather Example")
        index.add("Hangzhou travel", "https://travel.example/hz", "West Lake in 杭州明天开放")
        index.add("Python", "https://python.example", "A programming language")
        yield c


def use_providers(client: httpx.AsyncClient, *providers: FakeProvider,
                  **config: Any) -> None:
    backends = SearchBackends(SearchConfig(**config), list(providers))
    client.app.state.service.web_search = WebSearch(backends)  # type: ignore[attr-defined]


def system_prompt(engine: FakeEngine) -> str:
    messages = engine.tokenizer.template_calls[-1]["messages"]
    return messages[0]["content"] if messages[0]["role"] == "system" else ""


async def test_forced_search_native_sources_from_the_index(
        app_client: httpx.AsyncClient, engine: FakeEngine, gate: RecordingGate) -> None:
    body = native_body(content=QUESTION, result_format="message", enable_search=True,
                       search_options=SOURCES)
    r = await app_client.post(NATIVE, json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    results = data["output"]["search_info"]["search_results"]
    assert [x["index"] for x in results] == [1, 2]
    assert results[0] == {"index": 1, "title": "Hangzhou weather",
                          "url": "https://weather.example/hz", "site_name": "Weather Example",
                          "icon": ""}
    assert data["output"]["search_info"]["extra_tool_info"] == []
    assert data["usage"]["plugins"] == {"search": {"count": 1}}
    prompt = system_prompt(engine)
    assert "[1] Hangzhou weather\nURL: https://weather.example/hz" in prompt
    assert "[2] Hangzhou travel" in prompt and "Python" not in prompt
    assert "Do not add citation markers" in prompt
    [record] = gate.records
    assert record.search_count == 1 and record.status_code == 200
    assert record.input_tokens == data["usage"]["input_tokens"]


async def test_results_go_into_an_existing_system_message(
        app_client: httpx.AsyncClient, engine: FakeEngine) -> None:
    body = native_body(content=QUESTION, enable_search=True,
                       search_options={"forced_search": True})
    body["input"]["messages"].insert(0, {"role": "system", "content": "Be brief."})
    r = await app_client.post(NATIVE, json=body)
    assert r.status_code == 200
    assert "search_info" not in r.json()["output"]  # enable_source not set
    assert system_prompt(engine).startswith("Be brief.\n\n# Web search results")


@pytest.mark.parametrize(("fmt", "marker"), [(None, "[1]"), ("[ref_<number>]", "[ref_1]")])
async def test_citation_instruction(app_client: httpx.AsyncClient, engine: FakeEngine,
                                    fmt: str | None, marker: str) -> None:
    options = {**SOURCES, "enable_citation": True}
    if fmt:
        options["citation_format"] = fmt
    r = await app_client.post(NATIVE, json=native_body(
        content=QUESTION, enable_search=True, search_options=options))
    assert r.status_code == 200
    prompt = system_prompt(engine)
    assert f"in the form {marker}" in prompt and "Do not add citation" not in prompt


async def test_compatible_mode_sources(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post(CHAT, json=chat_body(content=QUESTION, enable_search=True,
                                                   search_options=SOURCES))
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["search_info"]["search_results"][0]["url"] == "https://weather.example/hz"
    assert data["usage"]["plugins"] == {"search": {"count": 1}}
    assert data["choices"][0]["message"]["content"] == "Hello from dashserve!"


async def test_native_stream_prepends_a_sources_only_frame(
        app_client: httpx.AsyncClient) -> None:
    options = {**SOURCES, "prepend_search_result": True}
    r = await app_client.post(NATIVE, headers={"X-DashScope-SSE": "enable"}, json=native_body(
        content=QUESTION, result_format="message", incremental_output=True,
        enable_search=True, search_options=options))
    assert r.status_code == 200
    events = native_events(r.text)
    first = events[0]["data"]
    assert first["usage"] == {}
    assert first["output"]["choices"][0]["message"]["content"] == ""
    assert [x["index"] for x in first["output"]["search_info"]["search_results"]] == [1, 2]
    rest = [e["data"] for e in events[1:]]
    assert all(d["output"]["search_info"]["search_results"] == [] for d in rest)
    text = "".join(d["output"]["choices"][0]["message"]["content"] for d in rest)
    assert text == "Hello from dashserve!"
    assert rest[-1]["usage"]["plugins"] == {"search": {"count": 1}}


async def test_native_stream_without_prepend_carries_sources_in_every_frame(
        app_client: httpx.AsyncClient) -> None:
    r = await app_client.post(NATIVE, headers={"X-DashScope-SSE": "enable"}, json=native_body(
        content=QUESTION, result_format="message", enable_search=True, search_options=SOURCES))
    events = [e["data"] for e in native_events(r.text)]
    assert events[0]["output"]["choices"][0]["message"]["content"] == "Hello"
    assert all(len(d["output"]["search_info"]["search_results"]) == 2 for d in events)


async def test_compatible_stream_prepends_a_sources_only_chunk(
        app_client: httpx.AsyncClient) -> None:
    options = {**SOURCES, "prepend_search_result": True}
    r = await app_client.post(CHAT, json=chat_body(
        content=QUESTION, stream=True, enable_search=True, search_options=options))
    chunks = openai_chunks(r.text)[:-1]
    assert chunks[0]["choices"] == [] and len(chunks[0]["search_info"]["search_results"]) == 2
    assert all("search_info" not in c for c in chunks[1:])
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[1:]
                   if c["choices"]) == "Hello from dashserve!"


async def test_model_decides_with_a_search_tool(make_client: Callable[..., httpx.AsyncClient],
                                                tmp_path: Path, gate: RecordingGate) -> None:
    call = ('<tool_call>\n{"name": "web_search", "arguments": {"query": "hangzhou '
            'weather"}}\n</tool_call>')
    caller = FakeEngine(script=[call])
    quiet = FakeEngine()
    async with make_client({"qwen-plus": caller, "qwen-max": quiet},
                           data_dir=tmp_path) as client:
        provider = FakeProvider(hits("w", 8))
        use_providers(client, provider)
        r = await client.post(NATIVE, json=native_body(
            content="weather?", enable_search=True, search_options={"enable_source": True}))
        assert r.status_code == 200
        assert provider.queries == [("hangzhou weather", 5)]  # turbo: 5 results
        decide = caller.submissions[0]
        assert decide.request_id.endswith("-search-0") and decide.params.temperature == 0.0
        [decision] = [c for c in caller.tokenizer.template_calls if c["tools"]]
        assert decision["tools"][0]["function"]["name"] == "web_search"
        assert len(r.json()["output"]["search_info"]["search_results"]) == 5
        usage = r.json()["usage"]
        answer_prompt = len(caller.submissions[1].prompt_token_ids)
        decide_tokens = len(decide.prompt_token_ids) + 2  # the call and the end token
        assert usage["input_tokens"] == answer_prompt + decide_tokens
        assert gate.records[-1].search_count == 1

        r = await client.post(NATIVE, json=native_body(
            model="qwen-max", content="hi", enable_search=True,
            search_options={"enable_source": True}))
        assert r.status_code == 200 and len(provider.queries) == 1  # no call, no search
        assert r.json()["output"]["search_info"]["search_results"] == []
        assert "plugins" not in r.json()["usage"] and gate.records[-1].search_count == 0
        assert len(quiet.submissions) == 2  # the decision pass, then the answer


async def test_agent_strategy_searches_in_rounds(make_client: Callable[..., httpx.AsyncClient],
                                                 tmp_path: Path) -> None:
    call = '<tool_call>\n{"name": "web_search", "arguments": {"query": "again"}}\n</tool_call>'
    engine = FakeEngine(script=[call])
    async with make_client({"qwen3-max": engine}, data_dir=tmp_path) as client:
        provider = FakeProvider(hits("a", 3))
        use_providers(client, provider, agent_rounds=3)
        r = await client.post(NATIVE, json=native_body(
            model="qwen3-max", content="research this", enable_search=True,
            search_options={"search_strategy": "agent", "enable_source": True}))
        assert r.status_code == 200
        assert len(provider.queries) == 3 and len(engine.submissions) == 4
        rounds = [c for c in engine.tokenizer.template_calls if c["tools"]]
        assert len(rounds) == 3 and rounds[0]["messages"][0]["role"] == "user"
        later = rounds[1]["messages"][0]["content"]
        assert "[1] a 1" in later  # the second round sees the first round's results
        assert r.json()["usage"]["plugins"] == {"search": {"count": 3}}


async def test_max_strategy_merges_every_provider(app_client: httpx.AsyncClient) -> None:
    first, second = FakeProvider(hits("one", 3)), FakeProvider(hits("two", 20))
    use_providers(app_client, first, second, results_max=6)
    options = {**SOURCES, "search_strategy": "max"}
    r = await app_client.post(NATIVE, json=native_body(content="q", enable_search=True,
                                                       search_options=options))
    urls = [x["url"] for x in r.json()["output"]["search_info"]["search_results"]]
    assert first.queries == [("q", 6)] and second.queries == [("q", 6)]
    assert urls == [f"https://one.example/{i}" for i in (1, 2, 3)] + \
        [f"https://two.example/{i}" for i in (1, 2, 3)]


async def test_forced_search_sends_one_query_per_request(app_client: httpx.AsyncClient,
                                                         engine: FakeEngine) -> None:
    provider = FakeProvider(hits("x", 2))
    use_providers(app_client, provider)
    for _ in range(3):
        r = await app_client.post(NATIVE, json=native_body(content=QUESTION, enable_search=True,
                                                           search_options=SOURCES))
        assert r.status_code == 200
    assert provider.queries == [(QUESTION, 5)] * 3
    assert all(not s.request_id.endswith(("-search-0",)) for s in engine.submissions)


async def test_provider_failure(app_client: httpx.AsyncClient, engine: FakeEngine,
                                gate: RecordingGate) -> None:
    use_providers(app_client, FakeProvider([], fail=True))
    r = await app_client.post(NATIVE, json=native_body(content=QUESTION, enable_search=True,
                                                       search_options=SOURCES))
    assert r.status_code == 503 and r.json()["code"] == "ServiceUnavailable"
    assert "forced_search" in r.json()["message"]
    assert gate.records[-1].status_code == 503 and gate.records[-1].output_tokens == 0
    assert engine.submissions == []
    r = await app_client.post(CHAT, json=chat_body(content=QUESTION, enable_search=True,
                                                   search_options=SOURCES))
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
    # Without forced_search the answer comes, without results.
    r = await app_client.post(NATIVE, json=native_body(content=QUESTION, enable_search=True,
                                                       search_options={"enable_source": True}))
    assert r.status_code == 200  # the fake engine never calls the tool: no search at all
    call = '<tool_call>\n{"name": "web_search", "arguments": {"query": "q"}}\n</tool_call>'
    engine.script = [call]
    r = await app_client.post(NATIVE, json=native_body(content=QUESTION, enable_search=True,
                                                       search_options={"enable_source": True}))
    assert r.status_code == 200
    assert r.json()["output"]["search_info"]["search_results"] == []
    assert gate.records[-1].search_count == 0


async def test_without_a_provider_enable_search_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json=native_body(enable_search=True))
    assert r.status_code == 400 and "no search provider" in r.json()["message"]
    r = await client.post(CHAT, json=chat_body(enable_search=True))
    assert r.status_code == 400 and r.json()["error"]["param"] == "enable_search"
    r = await client.post(NATIVE, json=native_body(search_options={"forced_search": True}))
    assert r.status_code == 200  # search_options alone have no effect


@pytest.mark.parametrize(("options", "param"), [
    ({"search_strategy": "deep"}, "search_options.search_strategy"),
    ({"enable_citation": True}, "search_options.enable_citation"),
    ({"forced_search": "yes"}, "search_options.forced_search"),
    ({"enable_search_extension": True}, "search_options.enable_search_extension"),
    ({"search_strategy": "agent", "enable_source": True}, "search_options.search_strategy"),
])
async def test_malformed_search_options(app_client: httpx.AsyncClient, engine: FakeEngine,
                                        gate: RecordingGate, options: dict[str, Any],
                                        param: str) -> None:
    r = await app_client.post(CHAT, json=chat_body(enable_search=True, search_options=options))
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    r = await app_client.post(NATIVE, json=native_body(enable_search=True,
                                                       search_options=options))
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter"
    assert engine.submissions == [] and gate.records == []


async def test_search_options_must_be_an_object(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post(NATIVE, json=native_body(enable_search=True,
                                                       search_options="forced"))
    assert r.status_code == 400
    assert json.dumps(r.json()).count("search_options") >= 1


async def test_results_that_do_not_fit_are_dropped_from_the_end(
        make_client: Callable[..., httpx.AsyncClient], tmp_path: Path) -> None:
    engine = FakeEngine()
    async with make_client({"qwen-plus": engine}, data_dir=tmp_path) as client:
        long = [SearchResult(f"r{i}", f"https://r.example/{i}", "word " * 60)
                for i in range(1, 6)]
        use_providers(client, FakeProvider(long))
        r = await client.post(NATIVE, json=native_body(
            content="q", enable_search=True, max_input_tokens=1200,
            search_options={"forced_search": True, "enable_source": True}))
        assert r.status_code == 200, r.text
        kept = r.json()["output"]["search_info"]["search_results"]
        assert 0 < len(kept) < 5
        assert [x["url"] for x in kept] == [f"https://r.example/{i}"
                                            for i in range(1, len(kept) + 1)]
        prompt = system_prompt(engine)
        assert f"[{len(kept)}] r{len(kept)}" in prompt and f"r{len(kept) + 1}" not in prompt
        assert r.json()["usage"]["input_tokens"] <= 1200
