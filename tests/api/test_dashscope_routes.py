"""Native text generation, non-stream: body shapes, parameters, defaults, usage."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import NATIVE, native_body
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate


async def test_message_format_body(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    r = await client.post(NATIVE, json=native_body(result_format="message"))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"output", "usage", "request_id"}
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["output"] == {"choices": [{"finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hello from dashserve!"}}]}
    prompt_len = len(engine.submissions[0].prompt_token_ids)
    # 5 words + the end-of-sequence token, counted by the engine
    assert body["usage"] == {"input_tokens": prompt_len, "output_tokens": 6,
                             "total_tokens": prompt_len + 6}


async def test_text_format_is_the_default_for_qwen_plus(client: httpx.AsyncClient) -> None:
    body = (await client.post(NATIVE, json=native_body())).json()
    assert body["output"] == {"text": "Hello from dashserve!", "finish_reason": "stop"}


async def test_message_format_is_the_default_for_qwen3_open_source(
        client: httpx.AsyncClient) -> None:
    body = (await client.post(NATIVE, json=native_body("qwen3-0.6b"))).json()
    assert body["output"]["choices"][0]["message"]["content"] == "Hello from dashserve!"


async def test_prompt_is_a_user_turn(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    r = await client.post(NATIVE, json={"model": "qwen-plus", "input": {"prompt": "你好"}})
    assert r.status_code == 200
    prompt = engine.tokenizer.decode(engine.submissions[0].prompt_token_ids)
    assert prompt.startswith("<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")


async def test_prompt_after_messages_and_history(client: httpx.AsyncClient,
                                                  engine: FakeEngine) -> None:
    body = {"model": "qwen-plus", "input": {
        "history": [{"user": "a", "bot": "b"}],
        "messages": [{"role": "system", "content": "sys"}], "prompt": "q"}}
    assert (await client.post(NATIVE, json=body)).status_code == 200
    call = engine.tokenizer.template_calls[-1]
    assert [(m["role"], m["content"]) for m in call["messages"]] == [
        ("user", "a"), ("assistant", "b"), ("system", "sys"), ("user", "q")]


async def test_thinking_is_off_by_default(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    await client.post(NATIVE, json=native_body())
    await client.post(NATIVE, json=native_body(enable_thinking=False))
    assert [c["enable_thinking"] for c in engine.tokenizer.template_calls] == [False, False]


async def test_parameters_reach_the_engine(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    params = {"temperature": 0.3, "top_p": 0.5, "top_k": 7, "repetition_penalty": 1.2,
              "presence_penalty": -1.0, "seed": 42, "max_tokens": 100, "n": 2,
              "result_format": "message", "logprobs": True, "top_logprobs": 3,
              "stop": ["END", "STOP"]}
    assert (await client.post(NATIVE, json=native_body(**params))).status_code == 200
    sp = engine.submissions[0].params
    assert (sp.temperature, sp.top_p, sp.top_k, sp.repetition_penalty) == (0.3, 0.5, 7, 1.2)
    assert (sp.presence_penalty, sp.seed, sp.max_tokens, sp.n) == (-1.0, 42, 100, 2)
    assert (sp.logprobs, sp.top_logprobs, sp.stop) == (True, 3, ("END", "STOP"))


@pytest.mark.parametrize(("model", "expected"), [
    ("qwen-plus", (0.7, 0.8, 20, 1.05, 0.0, 1234)),
    ("qwen-max", (0.7, 0.8, 20, 1.0, 1.5, 1234)),
    ("qwen3-0.6b", (0.7, 0.8, 20, 1.05, 1.5, 1234)),
])
async def test_profile_defaults(client: httpx.AsyncClient, engine: FakeEngine, model: str,
                                expected: tuple[float, ...]) -> None:
    await client.post(NATIVE, json=native_body(model))
    sp = engine.submissions[0].params
    got = (sp.temperature, sp.top_p, sp.top_k, sp.repetition_penalty, sp.presence_penalty,
           sp.seed)
    assert got == expected
    assert (sp.n, sp.logprobs, sp.top_logprobs) == (1, False, 0)


async def test_max_tokens_defaults_to_what_fits(client: httpx.AsyncClient,
                                                engine: FakeEngine) -> None:
    await client.post(NATIVE, json=native_body())
    prompt_len = len(engine.submissions[0].prompt_token_ids)
    # the fake engine's context is 4096; qwen-plus allows 16384 output tokens
    assert engine.submissions[0].params.max_tokens == 4096 - prompt_len


async def test_max_tokens_gives_length(client: httpx.AsyncClient) -> None:
    body = (await client.post(NATIVE, json=native_body(max_tokens=2))).json()
    assert body["output"] == {"text": "Hello from", "finish_reason": "length"}
    assert body["usage"]["output_tokens"] == 2


async def test_stop_string_is_not_emitted(client: httpx.AsyncClient) -> None:
    body = (await client.post(NATIVE, json=native_body(stop="dash"))).json()
    assert body["output"] == {"text": "Hello from ", "finish_reason": "stop"}


async def test_stop_token_ids(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    word = engine.tokenizer.word_id(" dash")
    body = (await client.post(NATIVE, json=native_body(stop=[word]))).json()
    assert body["output"]["text"] == "Hello from"
    assert engine.submissions[0].params.stop_token_ids == (word,)
    await client.post(NATIVE, json=native_body(stop=[[word], [72, 105]]))
    assert engine.submissions[1].params.stop_token_ids == (word,)
    assert engine.submissions[1].params.stop == ("Hi",)


async def test_n_choices_are_indexed(client: httpx.AsyncClient) -> None:
    body = (await client.post(NATIVE, json=native_body(n=2, result_format="message"))).json()
    choices = body["output"]["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    assert choices[1]["message"]["content"] == "[1]Hello from dashserve!"
    assert body["usage"]["output_tokens"] == 6 + 7


async def test_logprobs_shape(client: httpx.AsyncClient) -> None:
    body = (await client.post(NATIVE, json=native_body(
        logprobs=True, top_logprobs=2, result_format="message", max_tokens=2))).json()
    content = body["output"]["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content] == ["Hello", " from"]
    assert content[0]["bytes"] == list(b"Hello")
    assert content[0]["logprob"] == -0.25
    assert [t["token"] for t in content[0]["top_logprobs"]] == ["Hello", "A"]


async def test_partial_mode_continues_the_assistant(client: httpx.AsyncClient,
                                                    engine: FakeEngine) -> None:
    body = {"model": "qwen-plus", "input": {"messages": [
        {"role": "user", "content": "write"},
        {"role": "assistant", "content": "def f(", "partial": True}]}}
    assert (await client.post(NATIVE, json=body)).status_code == 200
    prompt = engine.tokenizer.decode(engine.submissions[0].prompt_token_ids)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\ndef f(")


async def test_unknown_parameters_and_headers_are_ignored(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json=native_body(foo_bar=1, enable_search=False),
                          headers={"X-DashScope-DataInspection": '{"input":"cip"}',
                                   "X-DashScope-WorkSpace": "ws-1"},
                          params={"extra": "1"})
    assert r.status_code == 200


async def test_cached_tokens_are_reported(make_client: object) -> None:
    engine = FakeEngine(cached_tokens=16)
    async with make_client({"qwen-plus": engine}) as c:  # type: ignore[operator]
        usage = (await c.post(NATIVE, json=native_body())).json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 16}


async def test_usage_is_billed_once(client: httpx.AsyncClient, gate: RecordingGate) -> None:
    r = await client.post(NATIVE, json=native_body(max_tokens=3))
    records = gate.records_for(r.json()["request_id"])
    assert len(records) == 1
    record = records[0]
    assert (record.status_code, record.finish_reason, record.output_tokens) == (200, "length", 3)
    assert record.input_tokens == r.json()["usage"]["input_tokens"]
    assert record.model == "qwen-plus" and record.key_prefix == "sk-"


async def test_null_parameters(client: httpx.AsyncClient) -> None:
    r = await client.post(NATIVE, json={"model": "qwen-plus", "input": {"prompt": "hi"},
                                        "parameters": None})
    assert r.status_code == 200
