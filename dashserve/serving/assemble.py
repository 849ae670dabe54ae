"""Per-choice accumulation of engine output: what is new (delta) and what there is (cumulative).

Engine events arrive per sample ``index``; each ``ChoiceAssembler`` owns one choice and
turns its events into a ``ChoiceDelta`` (what this event added) while keeping the
``ChoiceState`` (everything so far). Both APIs render from these two views: DashScope
``incremental_output=true`` and OpenAI streams use deltas, DashScope snapshots and
non-stream bodies use the cumulative state.

Text post-processing per choice (splitting reasoning from content, parsing tool calls)
plugs in through ``TextProcessor``: the default passes text through as content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from dashserve.contracts.outputs import EngineEvent, FinishReason, TokenLogprob
from dashserve.serving.reasoning import ReasoningSplitter
from dashserve.serving.tool_calls import ToolCallFragment, ToolCallParser


@dataclass(slots=True)
class TextPieces:
    """What a processor made of a stretch of generated text."""

    content: str = ""
    reasoning_content: str = ""
    tool_calls: list[ToolCallFragment] = field(default_factory=list)


class TextProcessor(Protocol):
    """Splits one choice's generated text into content, reasoning and tool calls."""

    def feed(self, text: str) -> TextPieces: ...

    def flush(self) -> TextPieces: ...


class PlainText:
    """The default processor: every character is content."""

    def feed(self, text: str) -> TextPieces:
        return TextPieces(content=text)

    def flush(self) -> TextPieces:
        return TextPieces()


class ChatText:
    """Qwen chat output: reasoning split off first (thinking mode: the prompt opened the
    block), then ``<tool_call>`` blocks parsed out of the answer (when tools are on)."""

    def __init__(self, *, thinking: bool = False, tools: bool = False,
                 parallel: bool = True) -> None:
        self._reasoning = ReasoningSplitter(True) if thinking else None
        self._tools = ToolCallParser() if tools else None
        self._parallel = parallel  # False: only the first call is kept (parallel_tool_calls)

    def feed(self, text: str) -> TextPieces:
        reasoning, content = self._reasoning.feed(text) if self._reasoning else ("", text)
        return self._answer(reasoning, content, final=False)

    def flush(self) -> TextPieces:
        reasoning, content = self._reasoning.flush() if self._reasoning else ("", "")
        return self._answer(reasoning, content, final=True)

    def _answer(self, reasoning: str, content: str, *, final: bool) -> TextPieces:
        if self._tools is None:
            return TextPieces(content, reasoning)
        delta = self._tools.feed(content)
        if final:
            tail = self._tools.flush()
            delta.content += tail.content
            delta.fragments.extend(tail.fragments)
        fragments = delta.fragments if self._parallel else [
            f for f in delta.fragments if f.index == 0]
        return TextPieces(delta.content, reasoning, fragments)


@dataclass(slots=True)
class ChoiceDelta:
    """What one choice gained from one engine event."""

    index: int
    content: str = ""
    reasoning_content: str = ""
    tool_calls: list[ToolCallFragment] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None  # set on the choice's last delta

    @property
    def is_empty(self) -> bool:
        return not (self.content or self.reasoning_content or self.tool_calls or self.logprobs
                    or self.finish_reason)


@dataclass(slots=True)
class ChoiceState:
    """Everything one choice produced so far."""

    index: int
    content: str = ""
    reasoning_content: str = ""
    tool_calls: list[ToolCallFragment] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    is_finished: bool = False
    num_output_tokens: int = 0
    num_reasoning_tokens: int = 0


def finish_reason_name(reason: FinishReason | None) -> str | None:
    """Wire name of an engine finish reason; an abort is reported as "not finished"."""
    if reason is None or reason is FinishReason.ABORT:
        return None
    return str(reason.value)


class ChoiceAssembler:
    """Accumulates one choice; ``feed`` returns the delta of each event."""

    def __init__(self, index: int, processor: TextProcessor | None = None) -> None:
        self.state = ChoiceState(index)
        self._processor = processor or PlainText()

    def feed(self, event: EngineEvent) -> ChoiceDelta:
        state = self.state
        pieces = self._processor.feed(event.text) if event.text else TextPieces()
        if event.finish_reason is not None:
            tail = self._processor.flush()
            pieces.content += tail.content
            pieces.reasoning_content += tail.reasoning_content
            pieces.tool_calls.extend(tail.tool_calls)
        delta = ChoiceDelta(state.index, pieces.content, pieces.reasoning_content,
                            pieces.tool_calls, list(event.logprobs or ()))
        state.content += delta.content
        state.reasoning_content += delta.reasoning_content
        state.tool_calls.extend(delta.tool_calls)
        state.logprobs.extend(delta.logprobs)
        state.num_output_tokens = event.num_output_tokens
        state.num_reasoning_tokens = event.num_reasoning_tokens
        if event.finish_reason is not None:
            state.is_finished = True
            name = finish_reason_name(event.finish_reason)
            if name == "stop" and state.tool_calls:
                name = "tool_calls"
            state.finish_reason = delta.finish_reason = name
        return delta


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts for a request, from the engine's exact counts (never re-tokenized)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    explicit_cache: bool = False  # the request carried a cache_control marker
    cache_creation_tokens: int = 0  # prompt tokens it newly put in the explicit cache
    image_tokens: int = 0  # prompt tokens of images (placeholders and their markers)
    image_hw: tuple[tuple[int, int], ...] | None = None  # vl_enable_image_hw_output
    video_tokens: int = 0  # prompt tokens of videos (placeholders and their markers)
    # speech recognition: the clip's placeholder tokens, the decoded seconds (usage.seconds)
    # and the recognition context's tokens (input_tokens_details.text_tokens)
    audio_tokens: int = 0
    audio_seconds: int = 0
    context_tokens: int = 0

    @property
    def text_tokens(self) -> int:
        return self.input_tokens - self.image_tokens - self.video_tokens - self.audio_tokens
    search_count: int = 0  # web searches run for the request

    def prompt_tokens_details(self) -> dict[str, Any]:
        """``prompt_tokens_details`` as DashScope reports it (explicit-cache keys if marked;
        text and image tokens when the prompt holds images)."""
        details: dict[str, Any] = {"cached_tokens": self.cached_tokens}
        if self.image_tokens or self.video_tokens:
            details["text_tokens"] = self.text_tokens
        if self.image_tokens:
            details["image_tokens"] = self.image_tokens
        if self.video_tokens:
            details["video_tokens"] = self.video_tokens
        if self.explicit_cache:
            details["cache_creation"] = {"ephemeral_5m_input_tokens": self.cache_creation_tokens}
            details["cache_creation_input_tokens"] = self.cache_creation_tokens
            details["cache_type"] = "ephemeral"
        return details

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class GenerationUpdate:
    """One engine event, assembled: the delta, the choice's state and running usage."""

    delta: ChoiceDelta
    choice: ChoiceState
    usage: Usage
    is_last: bool  # the request's final event


@dataclass(slots=True)
class Completion:
    """A finished (or cut-off) request: every choice's state and the final usage."""

    choices: list[ChoiceState]
    usage: Usage
    is_partial: bool = False  # cut off by the non-stream time limit


def usage_of(choices: list[ChoiceState], input_tokens: int, cached_tokens: int,
             explicit_cache: bool = False, cache_creation_tokens: int = 0,
             image_tokens: int = 0,
             image_hw: tuple[tuple[int, int], ...] | None = None,
             video_tokens: int = 0) -> Usage:
    return Usage(
        input_tokens=input_tokens,
        output_tokens=sum(c.num_output_tokens for c in choices),
        cached_tokens=cached_tokens,
        reasoning_tokens=sum(c.num_reasoning_tokens for c in choices),
        explicit_cache=explicit_cache,
        cache_creation_tokens=cache_creation_tokens,
        image_tokens=image_tokens,
        image_hw=image_hw,
        video_tokens=video_tokens,
    )
