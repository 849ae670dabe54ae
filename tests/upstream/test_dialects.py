"""Each upstream kind's request mapping, and stream bodies in each server's shape (written by
hand from its code: fixtures/README.md names the versions; none is a recording) replayed
through the dialect and the output tracker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dashserve.contracts.outputs import EngineEvent, FinishReason
from dashserve.contracts.params import SamplingParams, StructuredOutputSpec
from dashserve.errors import UnsupportedFeature
from dashserve.tokenizer import Tokenizer
from dashserve.upstream.dialect import Dialect, RequestPlan, sse_data
from dashserve.upstream.llamacpp import LlamaCppCompletion
from dashserve.upstream.sglang import SglangGenerate
from dashserve.upstream.vllm import OpenAICompletions, VllmCompletions
from tests.upstream.replay import replay_lines as replay_from_lines
from tests.upstream.replay import replay_stream

FIXTURES = Path(__file__).parent / "fixtures"
PROMPT = [151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198]
PLAN = RequestPlan("Qwen/Qwen3-8B", PROMPT, 100, "<|im_start|>user\nhi")


def replay(name: str, dialect: Dialect, tokenizer: Tokenizer,
           params: SamplingParams) -> list[EngineEvent]:
    return replay_stream(name, dialect, tokenizer, params, len(PROMPT))


def replay_lines(lines: list[str], dialect: Dialect, tokenizer: Tokenizer,
                 params: SamplingParams) -> list[EngineEvent]:
    return replay_from_lines(lines, dialect, tokenizer, params, len(PROMPT))


def text_of(events: list[EngineEvent]) -> str:
    return "".join(e.text for e in events)


@pytest.mark.parametrize(("name", "dialect"), [
    ("vllm-0.10.2-completions-stream.txt", VllmCompletions()),
    ("llamacpp-b6xxx-completion-stream.txt", LlamaCppCompletion()),
    ("openai-text-completions-stream.txt", OpenAICompletions()),
])
def test_fixture_streams_give_text_and_exact_usage(name: str, dialect: Dialect,
                                                    tokenizer: Tokenizer) -> None:
    events = replay(name, dialect, tokenizer, SamplingParams(max_tokens=100))
    assert text_of(events) == "Hello! How can I help you today?"
    last = events[-1]
    assert last.finished and last.finish_reason is FinishReason.STOP
    assert (last.num_prompt_tokens, last.num_output_tokens) == (9, 10)
    assert last.num_cached_tokens == (0 if dialect.kind == "vllm" else 4)
    assert all(not e.finished and e.finish_reason is None for e in events[:-1])


def test_token_id_streams_stop_at_stop_strings_held_back_like_the_engine(
        tokenizer: Tokenizer) -> None:
    params = SamplingParams(max_tokens=100, stop=("you",))
    for name, dialect in (("vllm-0.10.2-completions-stream.txt", VllmCompletions()),
                          ("llamacpp-b6xxx-completion-stream.txt", LlamaCppCompletion())):
        events = replay(name, dialect, tokenizer, params)
        assert text_of(events) == "Hello! How can I help "
        assert events[-1].finish_reason is FinishReason.STOP
        assert events[-1].num_output_tokens == 7  # the front ended it on " you"


def test_sglang_cumulative_stream_counts_reasoning_like_the_engine(tokenizer: Tokenizer) -> None:
    events = replay("sglang-0.4.6-generate-stream.txt", SglangGenerate(), tokenizer,
                    SamplingParams(max_tokens=100))
    assert text_of(events) == "<think>\nThe user greets.\n</think>\n\nHi there! 你好"
    last = events[-1]
    assert [t for e in events for t in e.token_ids][-1] == 151645  # each id exactly once
    assert (last.num_output_tokens, last.num_reasoning_tokens) == (15, 8)


def sglang_objects() -> list[dict[str, Any]]:
    lines = (FIXTURES / "sglang-0.4.6-generate-stream.txt").read_text("utf-8").splitlines()
    return [d for d in map(sse_data, lines) if d is not None]


def incremental(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same stream as ``--incremental-streaming-output`` sends it: only the new part."""
    out, ids_sent, text_sent = [], 0, 0
    for obj in objects:
        ids, text = obj["output_ids"], obj["text"]
        out.append({**obj, "output_ids": ids[ids_sent:], "text": text[text_sent:]})
        ids_sent, text_sent = len(ids), len(text)
    return out


def sse(objects: list[dict[str, Any]]) -> list[str]:
    return [*(f"data: {json.dumps(o)}" for o in objects), "data: [DONE]"]


def test_sglang_incremental_stream_reads_like_the_cumulative_one(tokenizer: Tokenizer) -> None:
    params = SamplingParams(max_tokens=100)
    cumulative = replay("sglang-0.4.6-generate-stream.txt", SglangGenerate(), tokenizer, params)
    events = replay_lines(sse(incremental(sglang_objects())), SglangGenerate(), tokenizer, params)
    assert [e.token_ids for e in events] == [e.token_ids for e in cumulative]
    assert text_of(events) == text_of(cumulative)
    assert (events[-1].num_output_tokens, events[-1].num_reasoning_tokens) == (15, 8)


@pytest.mark.parametrize("mode", ["cumulative", "incremental"])
@pytest.mark.parametrize("cut", [1, 6])
def test_sglang_abort_repeats_the_last_token_which_is_not_new(
        tokenizer: Tokenizer, mode: str, cut: int) -> None:
    sent = sglang_objects()[:cut]
    # SGLang 0.5's streamed abort (TokenizerManager._handle_abort_req): the last id only,
    # the whole text, the count of all ids, and no prompt or cached counts
    abort = {"text": sent[-1]["text"], "output_ids": sent[-1]["output_ids"][-1:], "index": 0,
             "meta_info": {"id": "5d0c3b0e6e0f4a4a9f3a2c1b0d9e8f7a",
                           "finish_reason": {"type": "abort", "message": "Abort in waiting queue"},
                           "weight_version": "default", "e2e_latency": 0.09,
                           "completion_tokens": cut}}
    objects = [*(sent if mode == "cumulative" else incremental(sent)), abort]
    events = replay_lines(sse(objects), SglangGenerate(), tokenizer, SamplingParams(max_tokens=100))
    assert [t for e in events for t in e.token_ids] == sent[-1]["output_ids"]
    assert events[-1].finish_reason is FinishReason.ABORT
    assert (events[-1].num_output_tokens, events[-1].num_prompt_tokens) == (cut, 9)


def test_vllm_text_without_token_ids_is_refused_not_followed_blind() -> None:
    choice = {"index": 0, "text": " Paris", "logprobs": None, "finish_reason": None,
              "stop_reason": None, "token_ids": None}
    chunk = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
             "choices": [choice], "usage": None}
    with pytest.raises(ValueError, match="token_ids"):
        VllmCompletions().parse(chunk)
    assert OpenAICompletions().parse(chunk) is not None  # the text kind reads text anyway
    last = {**chunk, "choices": [{**choice, "text": "", "finish_reason": "stop"}]}
    parsed = VllmCompletions().parse(last)
    assert parsed is not None and parsed.token_ids == []
    assert parsed.finish_reason is FinishReason.STOP


def test_answer_limit_after_thinking_is_enforced_at_the_front(tokenizer: Tokenizer) -> None:
    params = SamplingParams(max_tokens=3, starts_in_thinking=False)
    # without a thinking prompt max_tokens is the upstream's business: the stream runs out
    assert replay("sglang-0.4.6-generate-stream.txt", SglangGenerate(), tokenizer,
                  params)[-1].num_output_tokens == 15
    params = SamplingParams(max_tokens=3, starts_in_thinking=True)
    events = replay("sglang-0.4.6-generate-stream.txt", SglangGenerate(), tokenizer, params)
    assert events[-1].finish_reason is FinishReason.LENGTH


def body(dialect: Dialect, **params: Any) -> dict[str, Any]:
    return dialect.request_body(PLAN, SamplingParams(**params))


def test_vllm_mapping() -> None:
    b = body(VllmCompletions(), temperature=0.7, top_k=20, repetition_penalty=1.05, seed=3,
             stop_token_ids=(151643,), cache_salt="ws1", stop=("x",),
             structured=StructuredOutputSpec(json_schema={"type": "object"}))
    assert b["prompt"] == PROMPT and b["return_token_ids"] and b["max_tokens"] == 100
    assert (b["top_k"], b["repetition_penalty"], b["seed"]) == (20, 1.05, 3)
    assert b["stop_token_ids"] == [151643] and b["cache_salt"] == "ws1"
    assert b["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "output", "schema": {"type": "object"}, "strict": True}}
    assert "guided_json" not in b  # vLLM 0.32 ignores it (see test_recorded_vllm.py)
    assert "stop" not in b  # stop strings are matched at the front, with hold-back
    assert body(VllmCompletions())["top_k"] == -1  # no top-k


def test_llamacpp_mapping_turns_off_its_default_samplers() -> None:
    b = body(LlamaCppCompletion())
    assert (b["top_k"], b["min_p"], b["seed"], b["n_predict"]) == (0, 0.0, -1, 100)
    assert b["return_tokens"] and b["prompt"] == PROMPT and b["repeat_last_n"] == len(PROMPT) + 100
    b = body(LlamaCppCompletion(), structured=StructuredOutputSpec(json_object=True), seed=7)
    assert b["json_schema"] == {"type": "object"} and b["seed"] == 7


def test_sglang_mapping() -> None:
    b = body(SglangGenerate(), top_k=50, min_tokens=2, seed=1,
             structured=StructuredOutputSpec(json_schema={"type": "object"}))
    s = b["sampling_params"]
    assert b["input_ids"] == PROMPT and b["stream"]
    assert (s["top_k"], s["min_new_tokens"], s["sampling_seed"]) == (50, 2, 1)
    assert s["json_schema"] == '{"type": "object"}' and s["max_new_tokens"] == 100


def test_openai_text_kind_sends_the_rendered_prompt_and_stop_strings() -> None:
    b = body(OpenAICompletions(), stop=("END",))
    assert b["prompt"] == PLAN.prompt_text and b["stop"] == ["END"]


@pytest.mark.parametrize(("dialect", "params", "param"), [
    (VllmCompletions(), {"n": 2}, "n"),
    (SglangGenerate(), {"logprobs": True}, "logprobs"),
    (OpenAICompletions(), {"thinking_budget": 10, "starts_in_thinking": True}, "thinking_budget"),
    (LlamaCppCompletion(), {"min_tokens": 3}, "min_tokens"),
    (OpenAICompletions(), {"stop_token_ids": (5,)}, "stop"),
    (VllmCompletions(), {"pin_prefix_tokens": 16}, "cache_control"),
    (VllmCompletions(), {"structured": StructuredOutputSpec(grammar="start: x")}, "tool_choice"),
])
def test_what_a_kind_cannot_do_is_refused_with_400(dialect: Dialect, params: dict[str, Any],
                                                  param: str) -> None:
    with pytest.raises(UnsupportedFeature) as info:
        body(dialect, **params)
    assert info.value.status_code == 400 and info.value.param == param
    assert dialect.kind in info.value.message


def test_answer_limit_in_thinking_mode_needs_token_ids(make_pool: Any) -> None:
    params = SamplingParams(max_tokens=5, starts_in_thinking=True)
    ids = PROMPT
    room = make_pool(["http://127.0.0.1:9"], kind="vllm").endpoints[0]
    assert room.check(ids, params)["max_tokens"] == room.model_info.max_model_len - len(ids)
    text = make_pool(["http://127.0.0.1:9"], kind="openai").endpoints[0]
    assert text.check(ids, params)["max_tokens"] == 5  # reasoning and answer together


def test_stream_lines_past_strict_json_are_read_as_python_reads_them() -> None:
    """vLLM writes a -inf logprob as ``-Infinity``; ints past 64 bits are JSON too."""
    assert sse_data('data: {"logprob": -Infinity, "x": NaN}')["logprob"] == float("-inf")
    assert sse_data('data: {"n": 123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890}
    assert sse_data('data: {"text": "\\u4f60", "ids": [1, 2]}') == {"text": "你", "ids": [1, 2]}
    for line in ("data: [DONE]", ": ping", "data:", "data: [1, 2]"):
        assert sse_data(line) is None
    with pytest.raises(ValueError):
        sse_data("data: {not json")
