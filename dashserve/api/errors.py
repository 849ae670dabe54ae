"""Error rendering: one exception hierarchy, two wire shapes (native and OpenAI-compatible).

Native:  ``{"code": "InvalidParameter", "message": "...", "request_id": "..."}``
OpenAI:  ``{"error": {"message", "type", "param", "code"}, "request_id": "..."}``
Both carry the ``x-request-id`` header; throttling adds ``retry-after`` (or
``x-should-retry: false`` when retrying cannot help).
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dashserve.errors import (
    DashServeError,
    InternalError,
    InvalidRequest,
    ServiceUnavailable,
    Throttled,
)
from dashserve.platform.limits import retry_after_header

log = logging.getLogger(__name__)

COMPAT_PREFIX = "/compatible-mode/"


def request_id_of(request: Request) -> str:
    """The id the middleware gave this request (a fresh one if it somehow has none)."""
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = str(uuid.uuid4())
        request.state.request_id = rid
    return str(rid)


def error_headers(error: DashServeError, request_id: str) -> dict[str, str]:
    headers = {"x-request-id": request_id}
    if isinstance(error, Throttled):
        if error.retryable is False:
            headers["x-should-retry"] = "false"
        else:
            headers["retry-after"] = retry_after_header(error.retry_after_s)
    return headers


def native_error_body(error: DashServeError, request_id: str) -> dict[str, str]:
    return {"code": error.code, "message": error.message, "request_id": request_id}


def openai_error_body(error: DashServeError, request_id: str) -> dict[str, object]:
    return {
        "error": {"message": error.message, "type": error.openai_type, "param": error.param,
                  "code": error.openai_code},
        "request_id": request_id,
    }


def render_error(request: Request, error: DashServeError) -> JSONResponse:
    """The JSON error response for ``error`` in the protocol of ``request``'s path."""
    request_id = request_id_of(request)
    if request.url.path.startswith(COMPAT_PREFIX):
        body: dict[str, object] = openai_error_body(error, request_id)
    else:
        body = dict(native_error_body(error, request_id))
    return JSONResponse(body, status_code=error.status_code,
                        headers=error_headers(error, request_id))


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    return InvalidRequest(f"{param or 'request'}: {first.get('msg', 'invalid value')}",
                          param=param)


class _HttpError(DashServeError):
    """A routing-level error (unknown URL, wrong method) in our wire shape."""

    openai_type = "invalid_request_error"

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = "InvalidParameter" if status_code < 500 else "InternalError"
        self.openai_code = "not_found" if status_code == 404 else "invalid_request_error"


def is_outage(exc: BaseException) -> bool:
    """A database (or other backing service) that cannot be reached, not a bug of ours."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


async def report_error(request: Request, error: DashServeError) -> None:
    """Hand an error answer to ``app.state.report_error`` (the gate's ``refuse``: metrics
    and an error row in the usage table), unless the request's run already billed it."""
    hook = getattr(request.app.state, "report_error", None)
    if hook is None or getattr(request.state, "billed", False):
        return
    request.state.billed = True
    try:
        await hook(request_id_of(request), getattr(request.state, "principal", None),
                   getattr(request.state, "model", "") or "", error)
    except Exception:
        log.exception("could not record the error answer of %s", request_id_of(request))


async def _answer(request: Request, error: DashServeError) -> JSONResponse:
    response = render_error(request, error)
    await report_error(request, error)
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Render every error the app can raise in the caller's protocol (and report it)."""

    @app.exception_handler(DashServeError)
    async def _dashserve(request: Request, exc: DashServeError) -> JSONResponse:
        return await _answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await _answer(request, validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = ("url error, please check url" if exc.status_code == 404
                   else str(exc.detail))
        return await _answer(request, _HttpError(exc.status_code, message))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_outage(exc):
            log.error("store unavailable on %s %s: %s", request.method, request.url.path, exc)
            return await _answer(request, ServiceUnavailable())
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return await _answer(request, InternalError())
