"""Streams recorded from a real SGLang server (0.5.23 on CPU, default cumulative output and
``--incremental-streaming-output``; fixtures/README.md says which model and requests),
replayed through the sglang dialect and the output tracker: ids, text and usage come out as
the server sent them, and the request the dialect builds is the one the server answered."""

from __future__ import annotations

import json

import pytest

from dashserve.contracts.outputs import EngineEvent, FinishReason
from dashserve.contracts.params import SamplingParams, StructuredOutputSpec
from dashserve.tokenizer import Tokenizer
from dashserve.upstream.dialect import RequestPlan
from dashserve.upstream.sglang import SglangGenerate
from tests.upstream.replay import FIXTURES, replay_stream

V = "sglang-0.5.23-generate"
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
RECORDED = {  # fixture: (prompt tokens, output tokens, cached tokens)
    f"{V}-recorded.txt": (9, 16, 0),
    f"{V}-cached-recorded.txt": (312, 8, 311),
    f"{V}-json-schema-recorded.txt": (9, 24, 0),
    f"{V}-incremental-recorded.txt": (9, 16, 0),
    f"{V}-incremental-cached-recorded.txt": (312, 8, 311),
}
ABORTED = {  # fixture: output tokens when /abort_request ended it
    f"{V}-abort-recorded.txt": 13,
    f"{V}-incremental-abort-recorded.txt": 11,
}


def objects(name: str) -> list[dict]:
    lines = (FIXTURES / name).read_text("utf-8").splitlines()
    return [json.loads(line[5:]) for line in lines
            if line.startswith("data:") and line.strip() != "data: [DONE]"]


def prompt(name: str) -> list[int]:
    """The recording's prompt: that of the vLLM recording made with the same ids."""
    vllm = "vllm-0.32.0-completions-cached-recorded.txt" if "cached" in name else (
        "vllm-0.32.0-completions-recorded.txt")
    return objects(vllm)[0]["choices"][0]["prompt_token_ids"]


def sent(name: str) -> tuple[list[int], str]:
    """Every output id and the whole text, as the server sent them."""
    objs = objects(name)
    if "incremental" in name:  # each object holds only the new part
        return [t for o in objs for t in o["output_ids"]], "".join(o["text"] for o in objs)
    return objs[-1]["output_ids"], objs[-1]["text"]  # each holds everything so far


def replay(name: str, tokenizer: Tokenizer, params: SamplingParams) -> list[EngineEvent]:
    return replay_stream(name, SglangGenerate(), tokenizer, params, len(prompt(name)))


@pytest.mark.parametrize(("name", "counts"), sorted(RECORDED.items()))
def test_recorded_streams_give_the_servers_ids_text_and_usage(
        name: str, counts: tuple[int, int, int], tokenizer: Tokenizer) -> None:
    ids, text = sent(name)
    meta = objects(name)[-1]["meta_info"]
    events = replay(name, tokenizer, SamplingParams(max_tokens=counts[1]))
    assert [t for e in events for t in e.token_ids] == ids and len(ids) == counts[1]
    assert "".join(e.text for e in events) == text
    end = events[-1]
    assert end.finished and end.finish_reason is FinishReason.LENGTH
    assert meta["finish_reason"] == {"type": "length", "length": counts[1]}
    assert (end.num_prompt_tokens, end.num_output_tokens, end.num_cached_tokens) == counts == (
        meta["prompt_tokens"], meta["completion_tokens"], meta["cached_tokens"])


@pytest.mark.parametrize(("name", "count"), sorted(ABORTED.items()))
def test_an_aborted_stream_keeps_its_last_token(name: str, count: int,
                                               tokenizer: Tokenizer) -> None:
    """SGLang 0.5.23 ends a running request aborted by ``/abort_request`` with an ordinary
    object: the last new token (incremental: not a repeat), prompt and cached counts."""
    ids, text = sent(name)
    last = objects(name)[-1]
    assert last["meta_info"]["finish_reason"]["type"] == "abort"
    assert last["meta_info"]["completion_tokens"] == count == len(ids)
    events = replay(name, tokenizer, SamplingParams(max_tokens=256))
    assert [t for e in events for t in e.token_ids] == ids
    assert "".join(e.text for e in events) == text
    end = events[-1]
    assert end.finished and end.finish_reason is FinishReason.ABORT
    assert (end.num_prompt_tokens, end.num_output_tokens, end.num_cached_tokens) == (9, count, 0)


@pytest.mark.parametrize("mode", ["", "incremental-"])
def test_the_stream_mode_is_read_from_the_ids(mode: str) -> None:
    chunks = [SglangGenerate().parse(o) for o in objects(f"{V}-{mode}recorded.txt")]
    assert all(c is not None for c in chunks)
    # the first object holds one id either way; after it only cumulative ones hold them all
    assert [c.is_cumulative for c in chunks[1:]] == [not mode] * (len(chunks) - 1)
    assert [len(c.token_ids or []) for c in chunks] == (
        [1] * 16 if mode else list(range(1, 17)))


def test_the_requests_are_the_ones_the_server_answered(tokenizer: Tokenizer) -> None:
    """Token ids in (``prompt_tokens`` is their count), the schema as ``json_schema`` (the
    output opens ``{"a"``), and a second sending of a prompt served from the radix cache."""
    dialect = SglangGenerate()
    for name, (n_prompt, n_out, _) in RECORDED.items():
        body = dialect.request_body(RequestPlan("qwen3-h64", prompt(name), n_out),
                                    SamplingParams(max_tokens=n_out, temperature=1.0, seed=7))
        assert len(body["input_ids"]) == n_prompt == objects(name)[0]["meta_info"][
            "prompt_tokens"]
        assert body["stream"] is True and body["sampling_params"]["max_new_tokens"] == n_out
    params = SamplingParams(max_tokens=24, temperature=1.0, seed=7,
                            structured=StructuredOutputSpec(json_schema=SCHEMA))
    body = dialect.request_body(RequestPlan("qwen3-h64", prompt(V), 24), params)
    assert json.loads(body["sampling_params"]["json_schema"]) == SCHEMA
    events = replay(f"{V}-json-schema-recorded.txt", tokenizer, SamplingParams(max_tokens=24))
    assert "".join(e.text for e in events).startswith('{"a"')


def test_a_stop_string_in_a_recorded_stream_ends_it_at_the_front(tokenizer: Tokenizer) -> None:
    name = f"{V}-incremental-recorded.txt"
    texts = [o["text"] for o in objects(name)]
    events = replay(name, tokenizer, SamplingParams(max_tokens=16, stop=(texts[3],)))
    assert "".join(e.text for e in events) == "".join(texts[:3])
    assert events[-1].finish_reason is FinishReason.STOP
