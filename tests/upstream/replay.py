"""Replaying a fixture stream (one ``data:`` line per object) through a dialect and the
output tracker, as an endpoint does with a live stream."""

from __future__ import annotations

from pathlib import Path

from dashserve.contracts.outputs import EngineEvent
from dashserve.contracts.params import SamplingParams
from dashserve.tokenizer import Tokenizer
from dashserve.upstream.dialect import Dialect, sse_data
from dashserve.upstream.tracker import OutputTracker, ThinkIds

FIXTURES = Path(__file__).parent / "fixtures"


def replay_lines(lines: list[str], dialect: Dialect, tokenizer: Tokenizer,
                 params: SamplingParams, num_prompt_tokens: int) -> list[EngineEvent]:
    """The events of a stream's lines, ending with the tracker's final event."""
    tracker = OutputTracker("r", tokenizer, params, num_prompt_tokens, ThinkIds.of(tokenizer))
    events = []
    for line in lines:
        data = sse_data(line)
        chunk = dialect.parse(data) if data is not None else None
        if chunk is not None and (event := tracker.feed(chunk)) is not None:
            events.append(event)
        if tracker.local_finish is not None:
            break
    assert tracker.finish_reason is not None
    return [*events, tracker.final()]


def replay_stream(name: str, dialect: Dialect, tokenizer: Tokenizer, params: SamplingParams,
                  num_prompt_tokens: int) -> list[EngineEvent]:
    """``replay_lines`` of fixture ``name``."""
    lines = (FIXTURES / name).read_text("utf-8").splitlines()
    return replay_lines(lines, dialect, tokenizer, params, num_prompt_tokens)
