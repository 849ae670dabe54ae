"""Streams recorded from a real vLLM server (0.32.0, its CPU build; fixtures/README.md says
which model and requests), replayed through the vllm dialect and the output tracker: ids,
text and usage come out as the server sent them, and the request the dialect sends is the
one the server honoured."""

from __future__ import annotations

import json

import pytest

from dashserve.contracts.outputs import EngineEvent, FinishReason
from dashserve.contracts.params import SamplingParams, StructuredOutputSpec
from dashserve.tokenizer import Tokenizer
from dashserve.upstream.dialect import RequestPlan
from dashserve.upstream.vllm import VllmCompletions
from tests.upstream.replay import FIXTURES, replay_stream

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
RECORDED = {  # fixture: (prompt tokens, output tokens, cached tokens)
    "vllm-0.32.0-completions-recorded.txt": (9, 16, 0),
    "vllm-0.32.0-completions-cached-recorded.txt": (312, 8, 256),
    "vllm-0.32.0-completions-json-schema-recorded.txt": (9, 24, 0),
}


def objects(name: str) -> list[dict]:
    lines = (FIXTURES / name).read_text("utf-8").splitlines()
    return [json.loads(line[5:]) for line in lines
            if line.startswith("data:") and line.strip() != "data: [DONE]"]


def replay(name: str, tokenizer: Tokenizer, params: SamplingParams) -> list[EngineEvent]:
    prompt = objects(name)[0]["choices"][0]["prompt_token_ids"]
    return replay_stream(name, VllmCompletions(), tokenizer, params, len(prompt))


@pytest.mark.parametrize(("name", "counts"), sorted(RECORDED.items()))
def test_recorded_streams_give_the_servers_ids_text_and_usage(
        name: str, counts: tuple[int, int, int], tokenizer: Tokenizer) -> None:
    sent = objects(name)
    ids = [t for o in sent for c in o["choices"] for t in c["token_ids"]]
    usage = sent[-1]["usage"]
    events = replay(name, tokenizer, SamplingParams(max_tokens=counts[1]))
    assert [t for e in events for t in e.token_ids] == ids
    assert "".join(e.text for e in events) == "".join(
        c["text"] for o in sent for c in o["choices"])
    end = events[-1]
    assert end.finished and end.finish_reason is FinishReason.LENGTH
    assert (end.num_prompt_tokens, end.num_output_tokens, end.num_cached_tokens) == counts == (
        usage["prompt_tokens"], usage["completion_tokens"],
        usage["prompt_tokens_details"]["cached_tokens"])


def test_the_structured_output_request_is_the_one_the_server_honoured(
        tokenizer: Tokenizer) -> None:
    """vLLM 0.32 follows ``response_format`` (recorded: the schema's ``{"a"``) and ignored
    the older ``guided_json`` (an earlier recording with it answered free text)."""
    prompt = objects("vllm-0.32.0-completions-json-schema-recorded.txt")[0]["choices"][0][
        "prompt_token_ids"]
    params = SamplingParams(max_tokens=24, temperature=1.0, seed=7,
                            structured=StructuredOutputSpec(json_schema=SCHEMA))
    body = VllmCompletions().request_body(RequestPlan("qwen3-h64", prompt, 24, ""), params)
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert "guided_json" not in body
    events = replay("vllm-0.32.0-completions-json-schema-recorded.txt", tokenizer,
                    SamplingParams(max_tokens=24))
    assert "".join(e.text for e in events).startswith('{"a')


def test_a_stop_string_in_a_recorded_stream_ends_it_at_the_front(tokenizer: Tokenizer) -> None:
    sent = objects("vllm-0.32.0-completions-recorded.txt")
    texts = [c["text"] for o in sent for c in o["choices"]]
    stop = texts[3]
    events = replay("vllm-0.32.0-completions-recorded.txt", tokenizer,
                    SamplingParams(max_tokens=16, stop=(stop,)))
    assert "".join(e.text for e in events) == "".join(texts[:3])
    assert events[-1].finish_reason is FinishReason.STOP
