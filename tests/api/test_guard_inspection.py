"""The guard-model screening provider: a served model classifies input and output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from dashserve.inspection.guard import VERDICT_GRAMMAR, verdict_of
from tests.api.conftest import CHAT, NATIVE, chat_body, native_body
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate
from tests.utils.sse import native_events

CIP = {"X-DashScope-DataInspection": '{"input":"cip","output":"cip"}'}


def guard_settings(tmp_path: Path, prompt: str = "instruction") -> dict[str, object]:
    return {"data_dir": tmp_path, "inspection": {
        "provider": "guard", "guard_model": "qwen3guard", "guard_prompt": prompt}}


def test_verdicts() -> None:
    assert verdict_of("Safety: Unsafe\nCategories: Violent") == "Unsafe"
    assert verdict_of("safety:  controversial") == "Controversial"
    assert verdict_of("I cannot tell") is None


async def test_guard_blocks_input(make_client: Callable[..., httpx.AsyncClient],
                                  tmp_path: Path, gate: RecordingGate) -> None:
    main = FakeEngine()
    guard = FakeEngine(script=["Safety: Unsafe", "\nCategories: Violent"])
    async with make_client({"qwen-plus": main, "qwen3guard": guard},
                           **guard_settings(tmp_path)) as client:
        r = await client.post(NATIVE, json=native_body(content="how to hurt someone"),
                              headers=CIP)
        assert r.status_code == 400 and r.json()["code"] == "DataInspectionFailed"
        assert main.submissions == [] and gate.records == []
        [check] = guard.submissions
        assert check.params.temperature == 0.0
        assert check.params.structured is not None
        assert check.params.structured.grammar == VERDICT_GRAMMAR
        prompt = guard.tokenizer.template_calls[-1]["messages"][0]["content"]
        assert "content safety classifier" in prompt and "how to hurt someone" in prompt
        # no header: no screening, no guard call
        r = await client.post(NATIVE, json=native_body(content="how to hurt someone"))
        assert r.status_code == 200 and len(guard.submissions) == 1


async def test_guard_template_mode_and_safe_answers(
        make_client: Callable[..., httpx.AsyncClient], tmp_path: Path) -> None:
    main = FakeEngine()
    guard = FakeEngine(script=["Safety: Safe", "\nCategories: None"])
    async with make_client({"qwen-plus": main, "qwen3guard": guard},
                           **guard_settings(tmp_path, "template")) as client:
        r = await client.post(CHAT, json=chat_body(content="hello there"), headers=CIP)
        assert r.status_code == 200
        # input once, output at its end (short output: one check)
        assert len(guard.submissions) == 2
        first = guard.tokenizer.template_calls[0]["messages"]
        assert first == [{"role": "user", "content": "hello there"}]  # the guard's template
        last = guard.tokenizer.template_calls[-1]["messages"][0]["content"]
        assert "Hello from dashserve!" in last


async def test_guard_ends_a_stream_on_unsafe_output(
        make_client: Callable[..., httpx.AsyncClient], tmp_path: Path,
        gate: RecordingGate) -> None:
    main = FakeEngine(script=[f" word{i}" for i in range(100)], token_delay_s=0.005)
    guard = FakeEngine(script=["Safety: Controversial"])
    settings = guard_settings(tmp_path)
    settings["inspection"]["guard_block_controversial"] = True  # type: ignore[index]
    async with make_client({"qwen-plus": main, "qwen3guard": guard}, **settings) as client:
        r = await client.post(NATIVE, json=native_body(content="x", result_format="message",
                                                       incremental_output=True),
                              headers={"X-DashScope-DataInspection": '{"output": "cip"}',
                                       "X-DashScope-SSE": "enable"})
    events = native_events(r.text)
    assert events[-1]["event"] == "error"
    assert events[-1]["data"]["code"] == "DataInspectionFailed"
    sent = "".join(e["data"]["output"]["choices"][0]["message"]["content"]
                   for e in events[:-1])
    assert 0 < len(sent) < 256  # checked once 256 characters had come, before sending them
    [record] = gate.records
    assert record.status_code == 400 and 0 < record.output_tokens < 100
    assert len(guard.submissions) == 1


async def test_a_guard_that_is_not_served(make_client: Callable[..., httpx.AsyncClient],
                                          tmp_path: Path, gate: RecordingGate) -> None:
    main = FakeEngine()
    async with make_client({"qwen-plus": main}, **guard_settings(tmp_path)) as client:
        r = await client.post(NATIVE, json=native_body(), headers=CIP)
        assert r.status_code == 503 and "qwen3guard" in r.json()["message"]
        assert main.submissions == [] and gate.records == []
        assert (await client.post(NATIVE, json=native_body())).status_code == 200
