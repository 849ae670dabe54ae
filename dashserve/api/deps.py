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


async def authenticated_body(request: Request) -> tuple[Principal, dict[str, Any]]:
    """The caller (401 if the key is missing or wrong) and the JSON body (400 if bad)."""
    try:
        raw = await read_body(request)
    except PayloadTooLarge:
        await authenticate(request, "")  # a wrong key is still a 401; a right one is billed
        raise
    data: Any
    try:
        data = json.loads(raw) if raw.strip() else None
        problem = None if isinstance(data, dict) else "the request body must be a JSON object"
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        data, problem = None, f"the request body is not valid JSON: {exc}"
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
