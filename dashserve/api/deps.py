"""What every route needs: the app's objects, the request body, the caller, the connection.

Authentication comes before body validation (a wrong key is a 401 even when the body is
also wrong); the model name for the gate is taken from the body when it can be read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from dashserve.config import Settings
from dashserve.errors import DashServeError, InvalidRequest, PayloadTooLarge
from dashserve.platform.gate import Gate, Principal
from dashserve.serving.registry import ModelRegistry
from dashserve.serving.request import GenerationRequest
from dashserve.serving.run import GenerationRun
from dashserve.serving.service import GenerationService

M = TypeVar("M", bound=BaseModel)
MAX_JSON_DEPTH = 64  # no request shape nests deeper; deeper bodies are refused (400)
OFF_LOOP_BODY_BYTES = 256 * 1024  # bodies larger than this are parsed on a prompt thread
T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready."""


def settings_of(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def service_of(request: Request) -> GenerationService:
    return request.app.state.service  # type: ignore[no-any-return]


def registry_of(request: Request) -> ModelRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "").strip()
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def read_body(request: Request) -> bytes:
    limit = settings_of(request).max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_body(raw: bytes) -> tuple[Any, str | None]:
    """The JSON object in ``raw`` and None, or None and why it is refused: not JSON, not an
    object, nested deeper than ``MAX_JSON_DEPTH``, or a string that is not valid Unicode
    (a lone surrogate escape such as ``"\\ud800"``)."""
    try:
        data = json.loads(raw) if raw.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"the request body is not valid JSON: {exc}"
    except RecursionError:
        return None, f"the request body is nested deeper than {MAX_JSON_DEPTH} levels"
    if not isinstance(data, dict):
        return None, "the request body must be a JSON object"
    problem = check_json_values(data)
    return (None, problem) if problem else (data, None)


def check_json_values(data: Any) -> str | None:
    """Why parsed JSON is refused (too deep, invalid Unicode), or None; iterative."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return ("the request body holds a string that is not valid Unicode "
                        "(a lone surrogate)")
            continue
        if isinstance(value, dict):
            items: list[Any] = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            items = value
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return f"the request body is nested deeper than {MAX_JSON_DEPTH} levels"
        stack.extend((item, depth + 1) for item in items)
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def authenticated_body(request: Request) -> tuple[Principal, dict[str, Any]]:
    """The caller (401 if the key is missing or wrong) and the JSON body (400 if bad)."""
    try:
        raw = await read_body(request)
    except PayloadTooLarge:
        await authenticate(request, "")  # a wrong key is still a 401; a right one is billed
        raise
    if len(raw) > OFF_LOOP_BODY_BYTES:  # parsing megabytes must not stall other requests
        data, problem = await service_of(request).off_loop(parse_json_body, raw)
    else:
        data, problem = parse_json_body(raw)
    model = data.get("model") if isinstance(data, dict) else None
    request.state.model = model if isinstance(model, str) else ""
    principal = await authenticate(request, request.state.model)
    if problem is not None:
        raise InvalidRequest(problem, param="body")
    return principal, data


async def authenticate(request: Request, model: str) -> Principal:
    gate: Gate = request.app.state.gate
    workspace = request.headers.get("x-dashscope-workspace")
    try:
        principal = await gate.authenticate(bearer_token(request), workspace, model)
    except DashServeError as exc:  # a known key refused (403) still has its errors billed
        request.state.principal = getattr(exc, "principal", None)
        raise
    request.state.principal = principal
    return principal


async def start_run(request: Request, generation: GenerationRequest,
                    principal: Principal) -> GenerationRun:
    """Start the generation; once admitted, its run bills it (errors are not billed twice)."""

    def admitted() -> None:
        request.state.billed = True

    return await service_of(request).start(generation, principal, on_admitted=admitted)


def parse(model_cls: type[M], data: Any) -> M:
    """Validate ``data`` into ``model_cls``; a failure is a 400 naming the parameter."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise invalid_from(exc) from None


def invalid_from(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"])
    message = first["msg"]
    if first["type"] == "missing":
        return InvalidRequest(f"Required parameter '{param}' missing.", param=param)
    if isinstance(first.get("ctx"), dict) and isinstance(first["ctx"].get("error"),
                                                          DashServeError):
        error: DashServeError = first["ctx"]["error"]
        return InvalidRequest(error.message, param=error.param or param)
    return InvalidRequest(f"Invalid value for '{param}': {message}", param=param)


async def _until_disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise
    ``ClientDisconnected``."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientDisconnected()
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.wait({task, watcher})
