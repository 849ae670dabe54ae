"""The generation routes, served straight from their endpoints.

Walking the router and FastAPI's request handling costs a short request about a tenth of
the front's work before it reaches its engine or upstream. The generation endpoints take
nothing but the ``Request`` (no dependencies, no body model), so for an exact POST to one
of them this middleware calls the endpoint itself and renders its errors with the app's
exception handlers, as Starlette's own request handling does. Every other request goes
down the stack as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


def is_plain(endpoint: Callable[..., Any]) -> bool:
    """The endpoint is a coroutine function of the request alone."""
    params = list(inspect.signature(endpoint).parameters.values())
    return (inspect.iscoroutinefunction(endpoint) and len(params) == 1
            and params[0].annotation in (Request, "Request"))


class HotRoutes:
    """Serves POSTs to the paths of ``routes`` with their endpoints, which must be the ones
    the app's router has at those paths (see the module docstring)."""

    def __init__(self, app: ASGIApp, owner: FastAPI, routes: Mapping[str, Endpoint]) -> None:
        for path, endpoint in routes.items():
            if not is_plain(endpoint):
                raise ValueError(f"{path}: {endpoint.__name__} takes more than the request")
        self.app = app
        self.owner = owner
        self.routes = dict(routes)
        self._handlers: tuple[dict[Any, Any], dict[int, Any]] | None = None

    def _exception_handlers(self) -> tuple[dict[Any, Any], dict[int, Any]]:
        """The app's handlers as its ExceptionMiddleware holds them (Exception and 500
        belong to the outermost middleware, which still sees whatever is raised here); read
        at the first request, since they are installed after the middleware."""
        handlers = {k: v for k, v in self.owner.exception_handlers.items()
                    if k not in (500, Exception)}
        return ({k: v for k, v in handlers.items() if not isinstance(k, int)},
                {k: v for k, v in handlers.items() if isinstance(k, int)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (self.routes.get(get_route_path(scope))
                    if scope["type"] == "http" and scope["method"] == "POST" else None)
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        if self._handlers is None:
            self._handlers = self._exception_handlers()
        scope["endpoint"] = endpoint
        scope["starlette.exception_handlers"] = self._handlers
        request = Request(scope, receive, send)

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(request)
            await response(scope, receive, send)

        await wrap_app_handling_exceptions(serve, request)(scope, receive, send)
