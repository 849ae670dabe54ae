"""AsyncEngine: the engine on its own thread, with per-request asyncio queues for the server.

The engine thread owns the LLMEngine: it takes commands (add, abort) between steps, runs
steps while there is work, and hands each step's events to the event loop in one call.
Torch releases the GIL during kernels, so the server keeps serving while a step runs.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from dashserve.engine.client_protocol import ModelInfo
from dashserve.engine.engine import EngineConfig, LLMEngine
from dashserve.engine.outputs import EngineEvent, EngineStats
from dashserve.engine.params import SamplingParams

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine failed while running a request (a bug or a device error)."""


@dataclass(slots=True)
class _Add:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    done: Future[None]


@dataclass(slots=True)
class _Abort:
    request_id: str


@dataclass(slots=True)
class _Call:  # run on the engine thread between steps
    fn: Callable[[], object]


class AsyncEngine:
    """Implements the EngineClient protocol over an LLMEngine running on a thread."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_info = ModelInfo(
            name=str(engine.model_dir), architecture=engine.model_config.architecture,
            max_model_len=engine.max_model_len, vocab_size=engine.model_config.vocab_size,
            default_max_tokens=engine.model_config.demo_max_new_tokens,
        )
        self._commands: queue.Queue[_Add | _Abort | _Call | None] = queue.Queue()
        self._queues: dict[str, asyncio.Queue[EngineEvent | BaseException]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dashserve-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_pretrained(cls, model: str, *, progress: Callable[[str], None] | None = None,
                        warm_up: bool = False, **options: Any) -> AsyncEngine:
        """Load ``model`` (directory or hub id); options are EngineConfig fields.

        ``progress`` hears each stage ("loading weights n/m", "warming up"); ``warm_up`` runs
        a short generation before returning. With ``kernels="background"`` a kernel build
        still missing runs in a child process and the engine switches to it between steps.
        """
        options.pop("log_progress", None)  # loading always logs its progress
        report = progress or (lambda stage: None)
        engine = LLMEngine(EngineConfig(model=model, **options),
                           progress=lambda done, total: report(f"loading weights {done}/{total}"))
        if warm_up:
            report("warming up")
            log.info("warmed up in %.1f s", engine.warm_up())
        self = cls(engine)
        if engine.kernels_pending:
            from dashserve.model.kernel_build import build_in_background

            build_in_background(self._kernels_built)
        return self

    @property
    def kernels_pending(self) -> bool:
        """Native CPU kernels are still building; the torch path serves meanwhile."""
        return self.engine.kernels_pending

    def _kernels_built(self, ok: bool) -> None:
        if ok:
            self._commands.put(_Call(self.engine.attach_kernels))
        else:
            self.engine.kernels_pending = False

    # ----- EngineClient -----------------------------------------------------------------------

    async def submit(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[EngineEvent]:
        if self._stopping:
            raise EngineError("the engine is shutting down")
        self._loop = asyncio.get_running_loop()
        events: asyncio.Queue[EngineEvent | BaseException] = asyncio.Queue()
        self._queues[request_id] = events
        done: Future[None] = Future()
        self._commands.put(_Add(request_id, list(prompt_token_ids), params, done))
        finished = False
        try:
            await asyncio.wrap_future(done)  # raises InvalidParameter before scheduling
            while True:
                item = await events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finished:
                    finished = True
                    return
        finally:
            self._queues.pop(request_id, None)
            if not finished:
                self._commands.put(_Abort(request_id))

    async def abort(self, request_id: str) -> None:
        self._commands.put(_Abort(request_id))

    def stats(self) -> EngineStats:
        return self.engine.stats()

    async def shutdown(self) -> None:
        self._stopping = True
        if self.engine.kernels_pending:
            from dashserve.model.kernel_build import stop_background_build

            stop_background_build()
        self._commands.put(None)
        await asyncio.to_thread(self._thread.join, 30)

    # ----- engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            idle = not self.engine.has_unfinished()
            if not self._take_commands(block=idle):
                break
            if not self.engine.has_unfinished():
                continue
            try:
                events = self.engine.step()
            except Exception as exc:  # a step failed: fail and free every request in flight
                log.exception("engine step failed; aborting %d requests", len(self.engine.requests))
                self._fail_all(exc)
                continue
            self._deliver(events)
        for request_id in list(self.engine.requests):
            self.engine.abort(request_id)

    def _take_commands(self, block: bool) -> bool:
        """Apply queued commands; False once shutdown was requested."""
        while True:
            try:
                cmd = self._commands.get(block=block)
            except queue.Empty:
                return True
            block = False
            if cmd is None:
                return False
            if isinstance(cmd, _Call):
                try:
                    cmd.fn()
                except Exception:
                    log.exception("engine call %s failed", cmd.fn)
            elif isinstance(cmd, _Add):
                try:
                    self.engine.add_request(cmd.request_id, cmd.prompt_token_ids, cmd.params)
                except Exception as exc:
                    cmd.done.set_exception(exc)
                else:
                    cmd.done.set_result(None)
            else:
                self.engine.abort(cmd.request_id)

    def _fail_all(self, exc: Exception) -> None:
        error = EngineError(f"engine step failed: {type(exc).__name__}: {exc}")
        by_request: dict[str, list[EngineEvent | BaseException]] = {}
        for request_id in list(self.engine.requests):
            self.engine.abort(request_id)
            by_request[request_id] = [error]
        self._post(by_request)

    def _deliver(self, events: list[EngineEvent]) -> None:
        by_request: dict[str, list[EngineEvent | BaseException]] = defaultdict(list)
        for event in events:
            by_request[event.request_id].append(event)
        self._post(by_request)

    def _post(self, by_request: dict[str, list[EngineEvent | BaseException]]) -> None:
        if by_request and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._put_events, by_request)

    def _put_events(self, by_request: dict[str, list[EngineEvent | BaseException]]) -> None:
        for request_id, items in by_request.items():
            events = self._queues.get(request_id)
            if events is not None:
                for item in items:
                    events.put_nowait(item)
