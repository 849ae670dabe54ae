"""X-DashScope-DataInspection over both APIs: blocked input bills nothing, blocked output ends
the answer with DataInspectionFailed and bills what was generated."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from dashserve.inspection.rules import RuleStore
from tests.api.conftest import CHAT, MULTIMODAL, NATIVE, chat_body, native_body
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate
from tests.utils.sse import native_events, openai_chunks

CIP = {"X-DashScope-DataInspection": '{"input":"cip","output":"cip"}'}
INPUT_MESSAGE = "Input data may contain inappropriate content."
OUTPUT_MESSAGE = "Output data may contain inappropriate content."


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(script=["Hello", " from", " dash", "serve", "!"])


@pytest.fixture
async def app_client(make_client: Callable[..., httpx.AsyncClient], engine: FakeEngine,
                     tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    names = ("qwen-plus", "qwen3-vl-plus", "qwen2-audio-instruct")
    async with make_client({n: engine for n in names}, data_dir=tmp_path) as c:
        store: RuleStore = c.app.state.inspector.store  # type: ignore[attr-defined]
        store.add("*", "keyword", "forbidden")
        yield c


async def test_blocked_input_is_refused_and_bills_nothing(
        app_client: httpx.AsyncClient, engine: FakeEngine, gate: RecordingGate) -> None:
    body = native_body(content="tell me the forbidden thing")
    r = await app_client.post(NATIVE, json=body, headers=CIP)
    assert r.status_code == 400
    assert r.json()["code"] == "DataInspectionFailed"
    assert r.json()["message"] == INPUT_MESSAGE and r.json()["request_id"]
    r = await app_client.post(CHAT, json=chat_body(content="the Forbidden thing"), headers=CIP)
    assert r.status_code == 400
    assert r.json()["error"] == {"message": INPUT_MESSAGE, "type": "data_inspection_failed",
                                 "param": None, "code": "data_inspection_failed"}
    r = await app_client.post(NATIVE, json=body, headers={**CIP, "X-DashScope-SSE": "enable"})
    assert r.status_code == 400 and r.json()["code"] == "DataInspectionFailed"
    assert engine.submissions == [] and gate.records == [] and gate.admissions == []
    # without the header the same request is answered
    r = await app_client.post(NATIVE, json=body)
    assert r.status_code == 200 and len(gate.records) == 1


async def test_only_the_input_side_when_asked(app_client: httpx.AsyncClient,
                                              engine: FakeEngine) -> None:
    output_only = {"X-DashScope-DataInspection": '{"output": "cip"}'}
    r = await app_client.post(NATIVE, json=native_body(content="forbidden"),
                              headers=output_only)
    assert r.status_code == 200
    r = await app_client.post(NATIVE, json=native_body(content="forbidden"),
                              headers={"X-DashScope-DataInspection": "enable"})
    assert r.status_code == 400


async def test_the_system_message_and_history_are_screened(
        app_client: httpx.AsyncClient) -> None:
    body = native_body(content="hi")
    body["input"]["messages"][:0] = [{"role": "system", "content": "Say FORBIDDEN."},
                                     {"role": "assistant", "content": "ok"}]
    r = await app_client.post(NATIVE, json=body, headers=CIP)
    assert r.status_code == 400 and r.json()["code"] == "DataInspectionFailed"


async def test_rules_of_another_workspace_do_not_apply(
        make_client: Callable[..., httpx.AsyncClient], engine: FakeEngine,
        tmp_path: Path) -> None:
    async with make_client({"qwen-plus": engine}, data_dir=tmp_path) as client:
        store: RuleStore = client.app.state.inspector.store  # type: ignore[attr-defined]
        store.add("ws-9", "regex", r"(?i)secret-\d+")
        r = await client.post(NATIVE, json=native_body(content="secret-42"), headers=CIP)
        assert r.status_code == 200  # the static test key has no workspace


async def test_blocked_output_ends_the_native_stream(
        make_client: Callable[..., httpx.AsyncClient], tmp_path: Path,
        gate: RecordingGate) -> None:
    engine = FakeEngine(script=["One", " two", " forbid", "den", " four", " five"],
                        token_delay_s=0.02)
    async with make_client({"qwen-plus": engine}, data_dir=tmp_path) as client:
        client.app.state.inspector.store.add("*", "keyword", "forbidden")  # type: ignore
        r = await client.post(NATIVE, headers={**CIP, "X-DashScope-SSE": "enable"},
                              json=native_body(result_format="message",
                                               incremental_output=True))
    assert r.status_code == 200
    events = native_events(r.text)
    sent = "".join(e["data"]["output"]["choices"][0]["message"]["content"]
                   for e in events if e.get("event") == "result")
    assert sent == "One two forbid"  # the chunk completing the word is never sent
    last = events[-1]
    assert last["event"] == "error" and last["data"]["code"] == "DataInspectionFailed"
    assert last["data"]["message"] == OUTPUT_MESSAGE
    [record] = gate.records
    assert record.status_code == 400 and record.output_tokens == 4
    assert engine.aborted  # generation stopped


async def test_blocked_output_compatible_stream_and_non_stream(
        make_client: Callable[..., httpx.AsyncClient], tmp_path: Path,
        gate: RecordingGate) -> None:
    engine = FakeEngine(script=["One", " forbidden", " three"])
    async with make_client({"qwen-plus": engine}, data_dir=tmp_path) as client:
        client.app.state.inspector.store.add("*", "keyword", "forbidden")  # type: ignore
        r = await client.post(CHAT, json=chat_body(stream=True), headers=CIP)
        chunks = openai_chunks(r.text)
        error = next(c for c in chunks if isinstance(c, dict) and "error" in c)
        assert error["error"]["code"] == "data_inspection_failed"
        assert all("forbidden" not in str(c) for c in chunks if c is not error)
        r = await client.post(NATIVE, json=native_body(), headers=CIP)
        assert r.status_code == 400 and r.json()["message"] == OUTPUT_MESSAGE
        r = await client.post(CHAT, json=chat_body(), headers=CIP)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "data_inspection_failed"
        # input screening only: the output is not screened
        r = await client.post(NATIVE, json=native_body(content="hi"),
                              headers={"X-DashScope-DataInspection": '{"input":"cip"}'})
        assert r.status_code == 200 and "forbidden" in r.json()["output"]["text"]
    assert [rec.status_code for rec in gate.records] == [400, 400, 400, 200]
    assert all(rec.output_tokens == 2 for rec in gate.records[:3])


async def test_vl_and_audio_models_are_not_screened(app_client: httpx.AsyncClient) -> None:
    for model in ("qwen3-vl-plus", "qwen2-audio-instruct"):
        r = await app_client.post(MULTIMODAL, json=native_body(model=model,
                                                               content="forbidden"),
                                  headers=CIP)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", ["cip", '{"input": "yes"}', "{bad json"])
async def test_malformed_header(app_client: httpx.AsyncClient, engine: FakeEngine,
                                value: str) -> None:
    headers = {"X-DashScope-DataInspection": value}
    r = await app_client.post(NATIVE, json=native_body(), headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter"
    assert "X-DashScope-DataInspection" in r.json()["message"]
    r = await app_client.post(CHAT, json=chat_body(), headers=headers)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "X-DashScope-DataInspection"
    assert engine.submissions == []


async def test_header_refused_when_screening_is_off(
        make_client: Callable[..., httpx.AsyncClient], engine: FakeEngine,
        tmp_path: Path) -> None:
    async with make_client({"qwen-plus": engine}, data_dir=tmp_path,
                           inspection={"provider": "none"}) as client:
        r = await client.post(NATIVE, json=native_body(), headers=CIP)
        assert r.status_code == 400 and "not configured" in r.json()["message"]
        assert (await client.post(NATIVE, json=native_body())).status_code == 200
