"""Server-sent-event framing for both APIs, and the stream switch of the native API.

Native (DashScope) events, no space after the colons and one single-line JSON per data::

    id:1
    event:result
    :HTTP_STATUS/200
    data:{...}

Errors use ``event:error`` and an optional ``status:NNN`` line (which the 1.x SDK reads
as the HTTP status). There is no terminator: the stream ends when the body ends.
OpenAI-compatible events are ``data: {...}`` and the stream ends with ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from dashserve.compact_json import dump_bytes

SSE_MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = MappingProxyType({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
KEEPALIVE = b":keepalive\n\n"
OPENAI_DONE = b"data: [DONE]\n\n"


def wants_native_stream(headers: Mapping[str, str]) -> bool:
    """``X-DashScope-SSE: enable`` (authoritative) or ``Accept: text/event-stream``."""
    if headers.get("x-dashscope-sse", "").strip().lower() == "enable":
        return True
    accept = headers.get("accept", "").lower()
    return SSE_MEDIA_TYPE in accept


def native_event(event_id: int, data: Mapping[str, Any]) -> bytes:
    return (f"id:{event_id}\nevent:result\n:HTTP_STATUS/200\ndata:".encode() + dump_bytes(data)
            + b"\n\n")


def native_error_event(event_id: int, status: int, code: str, message: str, request_id: str,
                       *, status_line: bool = True) -> bytes:
    """An error frame; the message never contains ``data:`` (the sync SDK strips it)."""
    payload = {"code": code, "message": message.replace("data:", "data :"),
               "request_id": request_id}
    status_part = f"status:{status}\n" if status_line else ""
    return (f"id:{event_id}\nevent:error\n:HTTP_STATUS/{status}\n{status_part}data:".encode()
            + dump_bytes(payload) + b"\n\n")


def openai_event(data: Mapping[str, Any]) -> bytes:
    return b"data: " + dump_bytes(data) + b"\n\n"
