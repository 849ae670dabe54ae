"""The reasoning split of a whole output, for tests."""

from __future__ import annotations

from dashserve.serving.reasoning import ReasoningSplitter


def split_reasoning(text: str, starts_in_thinking: bool) -> tuple[str, str]:
    """(reasoning, content) of a whole output; same rules as ``ReasoningSplitter``."""
    splitter = ReasoningSplitter(starts_in_thinking)
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.flush()
    return r1 + r2, c1 + c2
