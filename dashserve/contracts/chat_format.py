"""The Qwen chat format's thinking markers and rules, defined once for engine and serving.

Qwen thinking output reads ``<think>\\nreasoning\\n</think>\\n\\nanswer``. In thinking mode the
prompt ends inside an open block (the template's own ``<think>\\n`` or one we append), so the
output starts as reasoning; otherwise a block opens only when the first output token is
``<think>``. When a request's ``thinking_budget`` is spent the engine appends
``FORCED_THINK_CLOSE`` itself, and serving strips the tags and the newlines around them.
Both markers are single special tokens of the Qwen vocabulary (``think_token_ids``).
"""

from __future__ import annotations

from typing import Protocol

THINK_START = "<think>"
THINK_END = "</think>"
# what the engine emits to end a block whose budget is spent: the close, then the blank line
# the model itself writes before its answer
FORCED_THINK_CLOSE = "\n" + THINK_END + "\n\n"


class _Vocabulary(Protocol):
    def token_to_id(self, text: str) -> int | None: ...


def think_token_ids(vocabulary: _Vocabulary) -> tuple[int | None, int | None]:
    """The ids of ``<think>`` and ``</think>`` (None where the vocabulary lacks them)."""
    return vocabulary.token_to_id(THINK_START), vocabulary.token_to_id(THINK_END)


def ends_in_thinking(text: str) -> bool:
    """``text`` (a rendered prompt) ends inside an open thinking block."""
    return text.rfind(THINK_START) > text.rfind(THINK_END)


def opens_thinking(text: str) -> str:
    """``text`` ending inside an open thinking block (adds ``<think>\\n`` if it does not)."""
    return text if ends_in_thinking(text) else text + THINK_START + "\n"
