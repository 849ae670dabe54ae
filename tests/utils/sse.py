"""Parsing SSE bodies in tests, strictly (so framing mistakes fail loudly)."""

from __future__ import annotations

import json
from typing import Any


def native_events(body: str) -> list[dict[str, Any]]:
    """Each event of a native stream as {"id", "event", "status", "comment", "data"}."""
    assert "[DONE]" not in body
    events = []
    for block in body.split("\n\n"):
        if not block.strip() or block.startswith(":keepalive"):
            continue
        event: dict[str, Any] = {}
        for line in block.split("\n"):
            key, _, value = line.partition(":")
            if key == "":
                event["comment"] = value
            elif key == "data":
                assert "data" not in event, "one data line per event"
                event["data"] = json.loads(value)
            else:
                event[key] = value
        events.append(event)
    return events


def openai_chunks(body: str) -> list[Any]:
    """The JSON of each ``data: `` line; the last item is the string "[DONE]"."""
    out: list[Any] = []
    for block in body.split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: "):]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out
