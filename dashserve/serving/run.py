"""One admitted generation: engine events in, assembled updates out, billed exactly once.

A ``GenerationRun`` owns a pump task that reads the engine's event stream into a local
buffer, so readers can wait with a timeout (stream heartbeats, the non-stream cut-off)
without ever cancelling the engine iterator mid-step. ``aclose`` is the single exit:
it stops the pump (which aborts the request in the engine and frees its KV blocks) and
reports a ``UsageRecord`` to the gate, once, whatever the outcome. A run may start before
its admission is answered (``admitted`` gives it); closed before that, it reports nothing:
the request was refused, and the refusal is recorded by whoever raised it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.errors import DashServeError, InternalError
from dashserve.platform.gate import Admission, Gate, UsageRecord
from dashserve.serving.asr import AsrPlan
from dashserve.serving.assemble import (
    ChatText,
    ChoiceAssembler,
    Completion,
    GenerationUpdate,
    Usage,
    usage_of,
)
from dashserve.serving.registry import ServedModel
from dashserve.serving.screening import OutputScreen
from dashserve.serving.web_search import SearchOutcome

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # status recorded when the client went away before the end
SHUTDOWN = 503  # status recorded for requests cut off by server shutdown
_STATUS_CODES = {CLIENT_CLOSED: "ClientClosed", SHUTDOWN: "ModelUnavailable",
                 500: "InternalError"}  # error codes of statuses set without an error
_END = object()


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated request, ready for the engine."""

    served: ServedModel
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingParams
    parse_tools: bool = False  # tool calls are parsed out of the output
    parallel_tool_calls: bool = False  # keep every call, not just the first
    explicit_cache: bool = False  # a cache_control marker was sent (usage reports the cache)
    mm_inputs: tuple[MultiModalInput, ...] = ()  # images placed in the prompt
    image_tokens: int = 0  # prompt tokens billed as image tokens
    image_hw: tuple[tuple[int, int], ...] | None = None  # resized (h, w), when asked for
    video_tokens: int = 0  # prompt tokens of videos (placeholders and their markers)
    # speech models: the clips' placeholder tokens (and, recognising speech, the billed
    # seconds, the context and the forced language)
    asr: AsrPlan | None = None
    search: SearchOutcome | None = None  # what web search did (enable_search)
    output_screen: OutputScreen | None = None  # X-DashScope-DataInspection on the output


def client_error(exc: BaseException) -> DashServeError:
    """The client-visible error for an exception raised by the engine: the engine raises the
    classes of ``errors`` itself; anything else is our bug, logged and shown as a 500."""
    if isinstance(exc, DashServeError):
        return exc
    log.error("generation failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return InternalError()


class GenerationRun:
    """Reads one request's events; see the module docstring for the life cycle."""

    def __init__(self, request_id: str, plan: Plan, admission: Admission | None, gate: Gate,
                 on_close: Callable[[], None]) -> None:
        self.request_id = request_id
        self.plan = plan
        self.admission = admission
        self._gate = gate
        self._on_close = on_close
        self._assemblers = [
            ChoiceAssembler(i, ChatText(thinking=plan.sampling.starts_in_thinking,
                                        tools=plan.parse_tools,
                                        parallel=plan.parallel_tool_calls))
            for i in range(plan.sampling.n)]
        self._items: deque[Any] = deque()
        self._ready = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._finalizer: asyncio.Task[None] | None = None
        self._input_tokens = 0
        self._cached_tokens = 0
        self._cache_created = 0
        self._done = False
        self._partial = False
        self._status: int | None = None
        self._error_code: str | None = None
        self._started = time.monotonic()
        self._first_token_at: float | None = None

    @property
    def is_done(self) -> bool:
        """The request's last event was read (or it failed)."""
        return self._done

    @property
    def usage(self) -> Usage:
        usage = usage_of([a.state for a in self._assemblers], self._input_tokens,
                         self._cached_tokens, self.plan.explicit_cache, self._cache_created,
                         self.plan.image_tokens if self._input_tokens else 0,
                         self.plan.image_hw,
                         self.plan.video_tokens if self._input_tokens else 0)
        asr = self.plan.asr
        if asr is not None:
            usage = dataclasses.replace(usage, audio_tokens=asr.audio_tokens,
                                        audio_seconds=asr.seconds,
                                        context_tokens=asr.context_tokens)
        search = self.plan.search
        if search is None:
            return usage
        # the decision passes of web search are billed as input
        return dataclasses.replace(usage, search_count=search.count,
                                   input_tokens=usage.input_tokens + search.overhead_tokens)

    async def admitted(self, admission: Admission) -> None:
        """The admission of a run started before it was admitted: from now on it is billed
        (at once, if the run was closed meanwhile, at server shutdown)."""
        if self._finalizer is None:
            self.admission = admission
            return
        await asyncio.shield(self._finalizer)  # it billed nothing: there was no admission
        self.admission = admission
        await self._gate.finish(admission, self._record())

    def start(self) -> None:
        self._pump = asyncio.create_task(self._pump_events(), name=f"run-{self.request_id}")

    async def _pump_events(self) -> None:
        plan = self.plan
        events = plan.served.engine.submit(EngineRequest(
            self.request_id, list(plan.prompt_token_ids), plan.sampling, plan.mm_inputs))
        try:
            async for event in events:  # the engine ends the iterator after `finished`
                self._push(event)
            self._push(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the reader, which reports it to the client
            self._push(exc)
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    def _push(self, item: Any) -> None:
        self._items.append(item)
        self._ready.set()

    async def accepted(self) -> None:
        """Wait for the engine's first event; raises the client error if it refused the
        request (e.g. a grammar that does not compile). Consumes nothing else."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        if isinstance(self._items[0], BaseException):
            await self.next_update()

    async def next_update(self, timeout_s: float | None = None) -> GenerationUpdate | None:
        """The next update, or None when ``timeout_s`` passed first. Raises the client
        error when the engine failed."""
        while not self._items:
            self._ready.clear()
            if timeout_s is None:
                await self._ready.wait()
                continue
            # a timer that wakes the wait, not wait_for: no task per wait on the token path
            timer = asyncio.get_running_loop().call_later(timeout_s, self._ready.set)
            try:
                await self._ready.wait()
            finally:
                timer.cancel()
            if not self._items:  # the timer woke it
                return None
        item = self._items.popleft()
        if item is _END:
            self._done = True
            self._status = 500
            raise InternalError("the engine ended the request without finishing it")
        if isinstance(item, BaseException):
            self._done = True
            error = client_error(item)
            self._status, self._error_code = error.status_code, error.code
            raise error
        assembler = self._assemblers[item.index]
        delta = assembler.feed(item)
        self._input_tokens = item.num_prompt_tokens
        self._cached_tokens = item.num_cached_tokens
        self._cache_created = item.num_cache_created_tokens
        if self._first_token_at is None and item.token_ids:
            self._first_token_at = time.monotonic()
        self._done = bool(item.finished)
        if self.plan.output_screen is not None:
            try:
                await self.plan.output_screen.check(assembler.state)
            except DashServeError as exc:
                self._done = True
                self._status = exc.status_code
                raise
        return GenerationUpdate(delta, assembler.state, self.usage, self._done)

    async def stream(self, heartbeat_s: float | None) -> AsyncIterator[GenerationUpdate | None]:
        """Updates until the end; None whenever ``heartbeat_s`` passed without one."""
        while not self._done:
            yield await self.next_update(heartbeat_s)

    async def complete(self, timeout_s: float | None) -> Completion:
        """Read to the end, or until ``timeout_s``: then the result is partial."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while not self._done:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                self._partial = True
                break
            await self.next_update(remaining)
        return Completion([a.state for a in self._assemblers], self.usage, self._partial)

    async def aclose(self, *, status_code: int | None = None, disconnected: bool = False) -> None:
        """Stop generating (if still running) and bill the request. Idempotent.

        Runs to completion even when the calling task is being cancelled (a client that
        disconnected), because the work happens in a shielded task of its own.
        """
        if self._finalizer is None:
            if status_code is not None:
                self._status = status_code
            elif disconnected and not self._done:
                self._status = CLIENT_CLOSED
            self._finalizer = asyncio.ensure_future(self._finalize())
        await asyncio.shield(self._finalizer)

    async def _finalize(self) -> None:
        try:
            if self._pump is not None and not self._pump.done():
                self._pump.cancel()
                await asyncio.wait({self._pump})
            if self.admission is not None:
                await self._gate.finish(self.admission, self._record())
        except Exception:
            log.exception("could not report usage of request %s", self.request_id)
        finally:
            self._on_close()

    def _record(self) -> UsageRecord:
        assert self.admission is not None
        usage = self.usage
        principal = self.admission.principal
        status = self._status or 200
        error_code = None
        if status >= 400:
            error_code = self._error_code or _STATUS_CODES.get(status, "Error")
        finish: str | None = None
        if status in (CLIENT_CLOSED, SHUTDOWN) and not self._done:
            finish = "abort"
        elif status == 200 and self._done:
            finish = self._assemblers[0].state.finish_reason
        now = time.monotonic()
        ttft = None if self._first_token_at is None else (self._first_token_at - self._started)
        return UsageRecord(
            request_id=self.request_id, key_id=principal.key_id,
            key_prefix=principal.key_prefix, workspace=principal.workspace,
            model=self.admission.model, input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens, finish_reason=finish, status_code=status,
            ttft_ms=None if ttft is None else ttft * 1000.0,
            duration_ms=(now - self._started) * 1000.0, created_at=datetime.now(timezone.utc),
            image_tokens=usage.image_tokens or None,
            search_count=usage.search_count,
            error_code=error_code,
        )
