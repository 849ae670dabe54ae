"""Per-choice accumulation: deltas, cumulative state, finish reasons, pluggable processors."""

from __future__ import annotations

from dashserve.contracts.outputs import EngineEvent, FinishReason, TokenLogprob
from dashserve.serving.assemble import (
    ChoiceAssembler,
    TextPieces,
    ToolCallFragment,
    Usage,
    finish_reason_name,
    usage_of,
)


def event(text: str, n: int, finish: FinishReason | None = None,
          logprob: bool = False) -> EngineEvent:
    lp = [TokenLogprob(1, text, list(text.encode()), -0.5)] if logprob else None
    return EngineEvent("r", 0, [1], text, finish, num_prompt_tokens=3, num_output_tokens=n,
                       logprobs=lp, finished=finish is not None)


def test_deltas_and_state() -> None:
    asm = ChoiceAssembler(0)
    d1 = asm.feed(event("He", 1, logprob=True))
    d2 = asm.feed(event("llo", 2, logprob=True))
    d3 = asm.feed(event("", 3, FinishReason.STOP))
    assert (d1.content, d2.content, d3.content) == ("He", "llo", "")
    assert [len(d.logprobs) for d in (d1, d2, d3)] == [1, 1, 0]
    assert (d1.finish_reason, d3.finish_reason) == (None, "stop")
    assert asm.state.content == "Hello" and asm.state.is_finished
    assert asm.state.num_output_tokens == 3 and len(asm.state.logprobs) == 2
    assert d3.is_empty is False and asm.feed(event("", 3)).is_empty


def test_abort_is_not_a_finish_reason() -> None:
    assert finish_reason_name(FinishReason.ABORT) is None
    assert finish_reason_name(FinishReason.LENGTH) == "length"
    asm = ChoiceAssembler(0)
    asm.feed(event("x", 1, FinishReason.ABORT))
    assert asm.state.is_finished and asm.state.finish_reason is None


class Splitter:
    """A processor that treats text in brackets as reasoning and flushes a tool call."""

    def feed(self, text: str) -> TextPieces:
        if text.startswith("["):
            return TextPieces(reasoning_content=text.strip("[]"))
        return TextPieces(content=text)

    def flush(self) -> TextPieces:
        return TextPieces(tool_calls=[ToolCallFragment(0, "call_1", "f", "{}")])


def test_processor_plugs_in_per_choice() -> None:
    asm = ChoiceAssembler(1, Splitter())
    d = asm.feed(event("[think]", 1))
    assert (d.reasoning_content, d.content, d.index) == ("think", "", 1)
    asm.feed(event("answer", 2))
    last = asm.feed(event("", 3, FinishReason.STOP))
    assert last.tool_calls[0].name == "f"
    assert asm.state.finish_reason == "tool_calls"
    assert (asm.state.reasoning_content, asm.state.content) == ("think", "answer")


def test_usage() -> None:
    a, b = ChoiceAssembler(0), ChoiceAssembler(1)
    a.feed(event("x", 4))
    b.feed(event("y", 6))
    usage = usage_of([a.state, b.state], input_tokens=10, cached_tokens=2)
    assert usage == Usage(10, 10, 2, 0) and usage.total_tokens == 20
