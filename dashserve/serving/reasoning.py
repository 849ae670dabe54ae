"""Split a model's streamed text into reasoning (``reasoning_content``) and answer (``content``).

Qwen thinking output looks like ``<think>\\nreasoning\\n</think>\\n\\nanswer`` (markers and rules:
``contracts.chat_format``). The prompt may already open the block (``starts_in_thinking``:
Qwen3 thinking-only models, or a template that ends in ``<think>\\n``); otherwise thinking
happens only when the output starts with ``<think>``. The tags never reach the client, nor
do the newlines around the reasoning and the newlines right after ``</think>``. Output that
never thinks is passed through unchanged.

The result does not depend on how the text is chunked: a tail that could be the start of a
tag (or newlines that might precede ``</think>``) is held back until the next ``feed`` or
``flush``. Newlines at the end of reasoning that never closed are kept (released on flush).
"""

from __future__ import annotations

from dashserve.contracts.chat_format import THINK_END, THINK_START

_START, _THINKING, _CONTENT = "start", "thinking", "content"


def _partial_tag_len(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class ReasoningSplitter:
    """Incremental splitter: ``feed(text)`` and ``flush()`` return (reasoning_delta, content_delta)."""

    def __init__(
        self, starts_in_thinking: bool, start_tag: str = THINK_START, end_tag: str = THINK_END
    ) -> None:
        self.starts_in_thinking = starts_in_thinking
        self.start_tag = start_tag
        self.end_tag = end_tag
        self._state = _START
        self._buf = ""
        self._at_reasoning_start = True  # drop newlines opening the reasoning
        self._at_content_start = False  # drop newlines right after the end tag
        self.thought = False  # a thinking block was seen (opened by the prompt or the output)

    @property
    def in_thinking(self) -> bool:
        return self._state == _THINKING or (self._state == _START and self.starts_in_thinking)

    def feed(self, text: str) -> tuple[str, str]:
        self._buf += text
        reasoning: list[str] = []
        content: list[str] = []
        while True:
            if self._state == _START and not self._decide_start():
                break
            if self._state == _THINKING:
                if not self._step_thinking(reasoning):
                    break
            if self._state == _CONTENT:
                content.append(self._take_content())
                break
        return "".join(reasoning), "".join(content)

    def flush(self) -> tuple[str, str]:
        """End of output: release whatever was held back."""
        buf, self._buf = self._buf, ""
        if self._state == _START and not self.starts_in_thinking:
            self._state = _CONTENT
        elif self._state == _START:
            self._state = _THINKING
            self.thought = True
        if self._state == _THINKING:
            return (buf.lstrip("\n") if self._at_reasoning_start else buf), ""
        if self._at_content_start:
            buf = buf.lstrip("\n")
        return "", buf

    def _decide_start(self) -> bool:
        """Before any output: does it open a thinking block? False while undecided."""
        buf, tag = self._buf, self.start_tag
        if buf.startswith(tag):
            self._buf = buf[len(tag):]
            self._state = _THINKING
        elif tag.startswith(buf):  # still a possible prefix of the tag (or empty)
            return False
        else:
            self._state = _THINKING if self.starts_in_thinking else _CONTENT
        self.thought = self._state == _THINKING
        return True

    def _step_thinking(self, out: list[str]) -> bool:
        """Emit reasoning; True when the end tag was found (state is now content)."""
        if self._at_reasoning_start:
            self._buf = self._buf.lstrip("\n")
            if not self._buf:
                return False
            self._at_reasoning_start = False
        end = self._buf.find(self.end_tag)
        if end >= 0:
            out.append(self._buf[:end].rstrip("\n"))
            self._buf = self._buf[end + len(self.end_tag):]
            self._state = _CONTENT
            self._at_content_start = True
            return True
        keep = _partial_tag_len(self._buf, self.end_tag)
        body = self._buf[: len(self._buf) - keep]
        keep += len(body) - len(body.rstrip("\n"))  # newlines that may precede the end tag
        out.append(self._buf[: len(self._buf) - keep])
        self._buf = self._buf[len(self._buf) - keep:]
        return False

    def _take_content(self) -> str:
        buf, self._buf = self._buf, ""
        if self._at_content_start:
            buf = buf.lstrip("\n")
            self._at_content_start = not buf
        return buf
