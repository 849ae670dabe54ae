"""The HTTP side of an engine process: one EngineClient served over the token-id wire.

See ``token_wire`` for the paths and shapes. A generate stream aborts its request as soon as
the front's connection goes away (even while the request still waits for a batch slot).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from dashserve.contracts.engine_client import EngineClient
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.errors import InvalidRequest
from dashserve.upstream import token_wire as wire

log = logging.getLogger(__name__)

# the shared secret of engine-serve and of Ray replicas, when the flags give none
SECRET_ENV = "DASHSERVE_ENGINE_SECRET"


def tokenizer_files(model_dir: str | Path) -> dict[str, str]:
    """The tokenizer files of a checkpoint directory that exist, by name."""
    root = Path(model_dir)
    return {name: (root / name).read_text("utf-8") for name in wire.TOKENIZER_FILES
            if (root / name).is_file()}


class _DisconnectAwareStream(StreamingResponse):
    """Streams while listening for the client's disconnect, which cancels the body (and so
    the engine request) at once, whatever ASGI version the server speaks."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            async def stream() -> None:
                await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


class EngineServer:
    """Routes of one engine process. ``secret``: the bearer token every request must carry
    (None: no check, for loopback use)."""

    def __init__(self, engine: EngineClient, files: Mapping[str, str],
                 secret: str | None = None) -> None:
        self.engine = engine
        self.files = dict(files)
        self.tokenizer_id = wire.tokenizer_id(self.files)
        self.secret = secret
        self.num_streams = 0  # generate streams open now (tests poll it through /v1/stats)
        self.num_requests = 0  # generate requests taken since start
        self.num_aborted = 0  # of which ended before their last event (front left, failure)

    def app(self, *, owns_engine: bool = False) -> Starlette:
        """The ASGI app; with ``owns_engine`` its shutdown shuts the engine down too."""

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            if owns_engine:
                await self.engine.shutdown()

        return Starlette(lifespan=lifespan, routes=[
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/info", self.info, methods=["GET"]),
            Route("/v1/tokenizer", self.tokenizer, methods=["GET"]),
            Route("/v1/stats", self.stats, methods=["GET"]),
            Route("/v1/generate", self.generate, methods=["POST"]),
            Route("/v1/abort", self.abort, methods=["POST"]),
        ])

    def _refused(self, request: Request) -> Response | None:
        if self.secret is None:
            return None
        given = request.headers.get("authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.secret}".encode()):
            return None
        return JSONResponse({"error": {"kind": "auth", "message": "bad engine secret"}}, 401)

    async def health(self, request: Request) -> Response:
        alive = bool(getattr(self.engine, "is_alive", True))
        return JSONResponse({"status": "ok" if alive else "failed"}, 200 if alive else 503)

    async def info(self, request: Request) -> Response:
        return self._refused(request) or JSONResponse({
            "wire": wire.WIRE_VERSION, "model": wire.model_info_to_wire(self.engine.model_info),
            "tokenizer_id": self.tokenizer_id})

    async def tokenizer(self, request: Request) -> Response:
        return self._refused(request) or JSONResponse(
            {"files": self.files, "tokenizer_id": self.tokenizer_id})

    async def stats(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        data = wire.stats_to_wire(self.engine.stats())
        data["num_streams"] = self.num_streams
        data["num_requests"] = self.num_requests
        data["num_aborted"] = self.num_aborted
        return JSONResponse(data)

    async def abort(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("request_id"), str):
            return _bad("request_id (a string) is required")
        await self.engine.abort(body["request_id"])
        return JSONResponse({"ok": True})

    async def generate(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _bad("the body must be a JSON object")
        try:
            request_id = str(body["request_id"])
            prompt = [int(i) for i in body["prompt_token_ids"]]
            params = wire.params_from_wire(body.get("params") or {})
            mm_inputs = [wire.mm_input_from_wire(m) for m in body.get("mm_inputs") or ()]
        except (KeyError, TypeError, ValueError, InvalidRequest) as exc:
            if isinstance(exc, InvalidRequest):  # checked values: the client's error
                return JSONResponse({"error": wire.error_to_wire(exc)}, 400)
            return _bad(f"malformed generate request: {exc}")
        return _DisconnectAwareStream(self._lines(request_id, prompt, params, mm_inputs),
                                      media_type="application/x-ndjson")

    async def _lines(self, request_id: str, prompt: list[int], params: SamplingParams,
                     mm_inputs: list[MultiModalInput]) -> AsyncIterator[bytes]:
        self.num_streams += 1
        self.num_requests += 1
        events = self.engine.submit(EngineRequest(request_id, prompt, params, tuple(mm_inputs)))
        finished = False
        try:
            async for event in events:
                finished = event.finished
                yield wire.encode_line({"event": wire.event_to_wire(event)})
        except Exception as exc:  # the front raises the same error a local engine would
            if not isinstance(exc, InvalidRequest):
                log.error("request %s failed: %s", request_id, exc, exc_info=exc)
            yield wire.encode_line({"error": wire.error_to_wire(exc)})
        finally:
            self.num_streams -= 1
            self.num_aborted += not finished
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


def _bad(message: str) -> Response:
    return JSONResponse({"error": {"kind": "bad_request", "message": message}}, 400)
