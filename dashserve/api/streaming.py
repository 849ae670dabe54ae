"""Serving a GenerationRun over HTTP: an SSE stream, or one JSON body with the time cut-off.

Both paths close the run exactly once (``GenerationRun.aclose`` is idempotent): at the
end of the body, on an error, and, for a client that went away, from the cancelled body
and again from the response's background task as a safety net.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

from dashserve.api.deps import ClientDisconnected, settings_of, unless_disconnected
from dashserve.api.sse import KEEPALIVE, SSE_HEADERS, SSE_MEDIA_TYPE
from dashserve.errors import DashServeError, InternalError
from dashserve.search.prompt import search_info
from dashserve.serving.assemble import Completion, GenerationUpdate
from dashserve.serving.run import CLIENT_CLOSED, GenerationRun

log = logging.getLogger(__name__)

PARTIAL_HEADER = "x-dashscope-partialresponse"


class StreamRenderer(Protocol):
    """Turns run updates into SSE frames for one protocol."""

    def start(self) -> list[bytes]: ...

    def frames(self, update: GenerationUpdate) -> list[bytes]: ...

    def end(self) -> list[bytes]: ...

    def error(self, error: DashServeError) -> bytes: ...


def sources_of(run: GenerationRun) -> tuple[dict[str, Any] | None, bool]:
    """The ``search_info`` to send (None unless sources were asked for) and whether it goes
    alone in a first stream frame (``prepend_search_result``)."""
    search = run.plan.search
    if search is None or not search.options.enable_source:
        return None, False
    return search_info(search.results), search.options.prepend_search_result


async def _frames(run: GenerationRun, renderer: StreamRenderer,
                  heartbeat_s: float) -> AsyncIterator[bytes]:
    status: int | None = None
    disconnected = True
    try:
        try:
            for frame in renderer.start():
                yield frame
            async for update in run.stream(heartbeat_s):
                if update is None:
                    yield KEEPALIVE
                    continue
                for frame in renderer.frames(update):
                    yield frame
            for frame in renderer.end():
                yield frame
        except DashServeError as exc:
            status = exc.status_code
            yield renderer.error(exc)
        except Exception as exc:  # a bug of ours: tell the client, keep the trace
            log.error("stream of %s failed", run.request_id, exc_info=exc)
            status = 500
            yield renderer.error(InternalError())
        disconnected = False
    finally:
        await run.aclose(status_code=status, disconnected=disconnected)


class SseResponse(StreamingResponse):
    """A streaming response that watches for the client's disconnect with one plain task.

    Starlette's own, for servers that speak ASGI before 2.4 (uvicorn), runs the body and the
    watch as two tasks of an anyio task group, with their cancel scopes: about a twentieth of
    the front's work on a short streamed request. Here the body streams in the request's own
    task, and a disconnect cancels that task, so the body's cleanup (billing the run, closing
    the engine or upstream request) runs at once, as it does there.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        version = scope.get("asgi", {}).get("spec_version", "2.0")
        if tuple(map(int, version.split("."))) >= (2, 4) or scope["type"] != "http":
            await super().__call__(scope, receive, send)  # disconnects raise from send there
            return
        streaming = asyncio.current_task()
        assert streaming is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            streaming.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone:
                raise
            uncancel = getattr(streaming, "uncancel", None)  # Python 3.11 and later
            if uncancel is not None:
                uncancel()  # the client left: not a cancellation of the request's task
        finally:
            watcher.cancel()
        if self.background is not None:
            await self.background()


def stream_response(request: Request, run: GenerationRun, renderer: StreamRenderer,
                    ) -> StreamingResponse:
    settings = settings_of(request)
    headers = dict(SSE_HEADERS)
    headers["x-request-id"] = run.request_id
    return SseResponse(
        _frames(run, renderer, settings.sse_keepalive_s), media_type=SSE_MEDIA_TYPE,
        headers=headers, background=BackgroundTask(run.aclose, disconnected=True),
    )


async def complete_response(request: Request, run: GenerationRun,
                            render: Callable[[Completion], dict[str, Any]]) -> Response:
    """Wait for the whole answer (or the cut-off) unless the client leaves; one JSON body."""
    settings = settings_of(request)
    status: int | None = None
    disconnected = False
    try:
        completion = await unless_disconnected(
            request, run.complete(settings.partial_response_timeout_s))
    except ClientDisconnected:
        disconnected = True
        return Response(status_code=CLIENT_CLOSED)
    except DashServeError as exc:
        status = exc.status_code
        raise
    except Exception:
        status = 500
        raise
    finally:
        await run.aclose(status_code=status, disconnected=disconnected)
    headers = {"x-request-id": run.request_id}
    if completion.is_partial:
        headers[PARTIAL_HEADER] = "true"
    return JSONResponse(render(completion), headers=headers)
