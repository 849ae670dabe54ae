"""Screening a request for ``X-DashScope-DataInspection``: its input before any engine
work, its output while it is generated.

Input: every message's text (and the reasoning and tool calls it carries). Output: each
choice's answer so far, reasoning and tool-call arguments included; a rule spanning more
than ``WINDOW_CHARS`` characters of output is not seen. The screening does not apply to
VL and audio models (as documented for the public service).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Protocol

from dashserve.errors import DataInspectionFailed, UnsupportedFeature
from dashserve.inspection.header import HEADER, InspectionRequest
from dashserve.serving.assemble import ChoiceState
from dashserve.serving.request import Message

INPUT_BLOCKED = "Input data may contain inappropriate content."
OUTPUT_BLOCKED = "Output data may contain inappropriate content."
WINDOW_CHARS = 2000
_NOT_SCREENED = re.compile(r"(^|[-_])(vl|audio|omni|asr)([-_]|$)|qvq", re.IGNORECASE)


class Inspector(Protocol):
    name: str
    check_every_chars: int  # output is checked after this many new characters (and at the end)

    async def blocked(self, text: str, workspace: str | None) -> bool: ...

    async def aclose(self) -> None: ...


def screened_model(name: str) -> bool:
    """Whether screening applies to the served name (not to VL and audio models)."""
    return _NOT_SCREENED.search(name) is None


def message_text(message: Message) -> str:
    parts = [message.content]
    for key, value in message.extra:
        if key in ("reasoning_content", "tool_calls", "name"):
            parts.append(value if isinstance(value, str) else json.dumps(value,
                                                                        ensure_ascii=False))
    return "\n".join(parts)


def checked_request(wanted: InspectionRequest, inspector: Inspector | None,
                    model: str) -> InspectionRequest:
    """The sides to screen for this request (none on VL/audio models)."""
    if not wanted.any or not screened_model(model):
        return InspectionRequest()
    if inspector is None:
        raise UnsupportedFeature("content screening is not configured on this server",
                                 param=HEADER)
    return wanted


async def screen_input(inspector: Inspector, messages: Sequence[Message],
                       workspace: str | None) -> None:
    for message in messages:
        if await inspector.blocked(message_text(message), workspace):
            raise DataInspectionFailed(INPUT_BLOCKED)


class OutputScreen:
    """Checks each choice's output as it grows; raises ``DataInspectionFailed``."""

    def __init__(self, inspector: Inspector, workspace: str | None) -> None:
        self.inspector = inspector
        self.workspace = workspace
        self._seen: dict[int, int] = {}

    async def check(self, state: ChoiceState) -> None:
        calls = "".join(f"{c.name or ''}{c.arguments}" for c in state.tool_calls)
        text = state.reasoning_content + "\n" + state.content + "\n" + calls
        seen = self._seen.get(state.index, 0)
        if len(text) == seen and not state.is_finished:
            return
        if len(text) - seen < self.inspector.check_every_chars and not state.is_finished:
            return
        start = max(0, seen - WINDOW_CHARS)
        self._seen[state.index] = len(text)
        if await self.inspector.blocked(text[start:], self.workspace):
            raise DataInspectionFailed(OUTPUT_BLOCKED)
