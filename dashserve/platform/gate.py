"""The contract between request handling and the platform: who is calling, may they, what it cost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``key_id`` is None for static keys given on the command line."""

    key_id: str | None
    key_prefix: str  # visible part of the key, safe to log (e.g. "sk-3f9a")
    workspace: str | None  # the workspace the request acts in
    name: str | None = None
    is_admin: bool = False


@dataclass(slots=True)
class Admission:
    """A request let in: holds its reservation until ``Gate.finish`` settles it."""

    principal: Principal
    request_id: str
    model: str
    reserved_tokens: int
    started_at: float  # time.monotonic() when admitted


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One row of the bill: written once per finished, failed or aborted request.

    Token counts come from the engine's final counts, never re-tokenized.
    """

    request_id: str
    key_id: str | None
    key_prefix: str
    workspace: str | None
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    finish_reason: str | None  # "stop", "length", "tool_calls", "abort", None (partial/failed)
    status_code: int
    ttft_ms: float | None
    duration_ms: float
    created_at: datetime
    image_tokens: int | None = None  # image tokens within input_tokens (None: no images)
    search_count: int = 0  # web searches run for the request (enable_search)
    error_code: str | None = None  # the error's code for failed requests (metrics, logs)


class Gate(Protocol):
    """Authentication, admission (rate limits) and metering, in that order.

    ``authenticate`` raises ``AuthenticationFailed`` (401) or ``AccessDenied`` (403);
    ``admit`` raises ``Throttled`` (429) with ``retry_after_s``; ``finish`` never raises and
    must not lose the record (it is queued and written off the request path).
    """

    async def authenticate(
        self, api_key: str | None, workspace: str | None, model: str
    ) -> Principal: ...

    async def admit(
        self, principal: Principal, request_id: str, model: str, estimated_tokens: int
    ) -> Admission: ...

    def expects_admission(self, principal: Principal, estimated_tokens: int) -> bool:
        """True when ``admit`` waits on a shared limiter and will almost surely succeed: the
        request may then start while it is admitted, and is dropped unbilled if refused."""
        ...

    async def finish(self, admission: Admission, record: UsageRecord) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
