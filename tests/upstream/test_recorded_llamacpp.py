"""Streams recorded from a real llama-server (fixtures/README.md says which build and request),
replayed through the llamacpp dialect and the output tracker: ids, text and usage come out as
the server sent them."""

from __future__ import annotations

import json

import pytest

from dashserve.contracts.outputs import EngineEvent, FinishReason
from dashserve.contracts.params import SamplingParams
from dashserve.tokenizer import Tokenizer
from dashserve.upstream.dialect import RequestPlan
from dashserve.upstream.llamacpp import LlamaCppCompletion
from tests.upstream.replay import FIXTURES, replay_stream

PROMPT = [151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198]
RECORDED = {"llamacpp-0c1e570-completion-recorded.txt": 0,
            "llamacpp-0c1e570-completion-repeat-recorded.txt": 8}


def sent(name: str) -> list[dict]:
    lines = (FIXTURES / name).read_text("utf-8").splitlines()
    return [json.loads(line[5:]) for line in lines if line.startswith("data:")]


def replay(name: str, tokenizer: Tokenizer, params: SamplingParams) -> list[EngineEvent]:
    return replay_stream(name, LlamaCppCompletion(), tokenizer, params, len(PROMPT))


def test_the_recorded_request_is_what_the_dialect_sends() -> None:
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=7)
    body = LlamaCppCompletion().request_body(RequestPlan("m", PROMPT, 16, ""), params)
    settings = sent("llamacpp-0c1e570-completion-recorded.txt")[-1]["generation_settings"]
    assert (settings["n_predict"], settings["seed"], settings["top_k"], settings["min_p"]) == (
        body["n_predict"], body["seed"], body["top_k"], body["min_p"])
    assert settings["repeat_last_n"] == body["repeat_last_n"] and settings["stream"]


@pytest.mark.parametrize(("name", "cached"), sorted(RECORDED.items()))
def test_recorded_streams_give_the_servers_ids_text_and_usage(name: str, cached: int,
                                                              tokenizer: Tokenizer) -> None:
    objects = sent(name)
    ids = [t for o in objects for t in o.get("tokens") or []]
    last = objects[-1]
    events = replay(name, tokenizer, SamplingParams(max_tokens=16))
    assert [t for e in events for t in e.token_ids] == ids
    assert "".join(e.text for e in events) == tokenizer.decode(ids)
    end = events[-1]
    assert end.finished and end.finish_reason is FinishReason.LENGTH  # stop_type "limit"
    assert end.num_prompt_tokens == last["tokens_evaluated"] == len(PROMPT)
    assert end.num_output_tokens == last["tokens_predicted"] == len(ids)
    assert end.num_cached_tokens == last["timings"]["cache_n"] == cached


def test_a_stop_string_in_a_recorded_stream_ends_it_at_the_front(tokenizer: Tokenizer) -> None:
    events = replay("llamacpp-0c1e570-completion-recorded.txt", tokenizer,
                    SamplingParams(max_tokens=16, stop=(" Aurora",)))
    text = "".join(e.text for e in events)
    assert text == "Street tapped⛧:error" and events[-1].finish_reason is FinishReason.STOP
