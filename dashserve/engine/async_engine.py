"""AsyncEngine: the engine on its own thread, with per-request asyncio queues for the server.

The engine thread owns the LLMEngine: it takes commands (add, abort) between steps, runs
steps while there is work, and hands each step's events to the event loop in one call.
Torch releases the GIL during kernels, so the server keeps serving while a step runs.
No command can end the thread: a failing one is reported to its caller (or logged), and
a request whose caller left before the thread took it is never added. Should the thread
end anyway, ``is_alive`` turns false, waiting callers get ``EngineError`` and new
requests are refused.
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

from dashserve.contracts.engine_client import AudioInfo, ModelInfo, VisionInfo
from dashserve.contracts.outputs import EngineEvent, EngineStats
from dashserve.contracts.request import EngineRequest
from dashserve.engine.engine import EngineConfig, LLMEngine
from dashserve.model.audio_config import AudioConfig
from dashserve.model.vision_config import VisionConfig

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine failed while running a request (a bug or a device error)."""


@dataclass(slots=True)
class _Add:
    request: EngineRequest
    done: Future[None]


@dataclass(slots=True)
class _Abort:
    request_id: str


def vision_info(vision: VisionConfig | None) -> VisionInfo | None:
    if vision is None:
        return None
    return VisionInfo(
        family=vision.family, patch_size=vision.patch_size,
        temporal_patch_size=vision.temporal_patch_size,
        spatial_merge_size=vision.spatial_merge_size, image_mean=vision.image_mean,
        image_std=vision.image_std, image_token_id=vision.image_token_id,
        video_token_id=vision.video_token_id, vision_start_token_id=vision.vision_start_token_id,
        vision_end_token_id=vision.vision_end_token_id,
    )


def audio_info(audio: AudioConfig | None) -> AudioInfo | None:
    if audio is None:
        return None
    return AudioInfo(
        family=audio.family, num_mel_bins=audio.num_mel_bins, chunk_frames=audio.chunk_frames,
        audio_token_id=audio.audio_token_id, audio_start_token_id=audio.audio_start_token_id,
        audio_end_token_id=audio.audio_end_token_id,
    )


@dataclass(slots=True)
class _Call:  # run on the engine thread between steps
    fn: Callable[[], object]


class AsyncEngine:
    """Implements the EngineClient protocol over an LLMEngine running on a thread."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        prepare = getattr(self.tokenizer, "prepare_for_serving", None)
        if prepare is not None:  # client text is encoded as plain text: ready before serving
            prepare()
        self.model_info = ModelInfo(
            name=str(engine.model_dir), architecture=engine.model_config.architecture,
            max_model_len=engine.max_model_len, vocab_size=engine.model_config.vocab_size,
            vision=vision_info(engine.model_config.vision),
            default_max_tokens=engine.model_config.demo_max_new_tokens,
            audio=audio_info(engine.model_config.audio),
        )
        self._commands: queue.Queue[_Add | _Abort | _Call | None] = queue.Queue()
        self._queues: dict[str, asyncio.Queue[EngineEvent | BaseException]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.failure: str | None = None  # why the engine thread ended, if it did
        self._thread = threading.Thread(target=self._run, name="dashserve-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_pretrained(cls, model: str, *, progress: Callable[[str], None] | None = None,
                        warm_up: bool = False, **options: Any) -> AsyncEngine:
        """Load ``model`` (directory or hub id); options are EngineConfig fields."""
        options.pop("log_progress", None)  # loading always logs its progress
        return cls.from_config(EngineConfig(model=model, **options), progress=progress,
                               warm_up=warm_up)

    @classmethod
    def from_config(cls, config: EngineConfig, *,
                    progress: Callable[[str], None] | None = None,
                    warm_up: bool = False) -> AsyncEngine:
        """Load the engine ``config`` describes.

        ``progress`` hears each stage ("loading weights n/m", "warming up"); ``warm_up`` runs
        a short generation before returning. With ``kernels="background"`` a kernel build
        still missing runs in a child process and the engine switches to it between steps.
        """
        report = progress or (lambda stage: None)
        engine = LLMEngine(config,
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

    @property
    def is_alive(self) -> bool:
        """The engine thread is running (False after a crash or a shutdown)."""
        return self._thread.is_alive() and self.failure is None

    async def submit(self, request: EngineRequest) -> AsyncIterator[EngineEvent]:
        if self._stopping:
            raise EngineError("the engine is shutting down")
        if not self.is_alive:
            raise EngineError(f"the engine is not running: {self.failure or 'stopped'}")
        self._loop = asyncio.get_running_loop()
        events: asyncio.Queue[EngineEvent | BaseException] = asyncio.Queue()
        request_id = request.request_id
        self._queues[request_id] = events
        done: Future[None] = Future()
        self._commands.put(_Add(request, done))
        finished = False
        try:
            await asyncio.wrap_future(done)  # raises InvalidRequest before scheduling
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
        try:
            self._loop_steps()
        except BaseException as exc:  # never expected: report it rather than vanish
            log.critical("engine thread failed", exc_info=exc)
            self.failure = f"engine thread failed: {type(exc).__name__}: {exc}"
            self._fail_waiting(EngineError(self.failure))
            raise
        if not self._stopping:
            self.failure = "engine thread ended"
        self._fail_waiting(EngineError(f"the engine stopped: {self.failure or 'shutdown'}"))

    def _loop_steps(self) -> None:
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
            try:
                self._apply(cmd)
            except Exception:  # one bad command must not stop the engine
                log.exception("engine command %s failed", type(cmd).__name__)

    def _apply(self, cmd: _Add | _Abort | _Call) -> None:
        if isinstance(cmd, _Call):
            cmd.fn()
            return
        if isinstance(cmd, _Abort):
            self.engine.abort(cmd.request_id)
            return
        if not cmd.done.set_running_or_notify_cancel():
            return  # the caller left before the engine took the request: never add it
        try:
            self.engine.add_request(cmd.request)
        except Exception as exc:
            cmd.done.set_exception(exc)
        else:
            cmd.done.set_result(None)

    def _fail_waiting(self, error: EngineError) -> None:
        """After the thread ended: fail commands not taken and every open event stream."""
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
            if isinstance(cmd, _Add) and cmd.done.set_running_or_notify_cancel():
                cmd.done.set_exception(error)
        self._post({request_id: [error] for request_id in list(self._queues)})

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
            try:
                self._loop.call_soon_threadsafe(self._put_events, by_request)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting
                pass

    def _put_events(self, by_request: dict[str, list[EngineEvent | BaseException]]) -> None:
        for request_id, items in by_request.items():
            events = self._queues.get(request_id)
            if events is not None:
                for item in items:
                    events.put_nowait(item)
