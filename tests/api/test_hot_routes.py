"""The generation routes served without the router walk (``HotRoutes``): same endpoints, same
answers and errors as through the router."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request

from dashserve.api.hot_routes import HotRoutes, is_plain
from dashserve.app import GENERATION_ROUTES
from tests.api.conftest import CHAT, NATIVE, chat_body, native_body


def test_each_hot_path_has_the_routers_own_endpoint(client: httpx.AsyncClient) -> None:
    app = client.app  # type: ignore[attr-defined]
    for path, endpoint in GENERATION_ROUTES.items():
        assert is_plain(endpoint)
        # the router serves the route named after this endpoint at this very path
        assert app.url_path_for(endpoint.__name__) == path


def test_an_endpoint_that_needs_more_than_the_request_is_refused() -> None:
    async def with_body(request: Request, limit: int) -> None: ...

    with pytest.raises(ValueError, match="takes more than the request"):
        HotRoutes(FastAPI(), FastAPI(), {"/x": with_body})


async def test_answers_and_errors_are_the_routers(client: httpx.AsyncClient) -> None:
    ok = await client.post(CHAT, json=chat_body())
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]
    assert ok.headers["x-request-id"]
    # a DashScope error raised by the endpoint is rendered by the app's handler
    bad = await client.post(CHAT, json=chat_body(temperature=5))
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_parameter_error"
    native = await client.post(NATIVE, json=native_body(top_p=0))
    assert native.status_code == 400 and native.json()["code"] == "InvalidParameter"
    assert native.json()["request_id"] == native.headers["x-request-id"]
    unauthorized = await client.post(CHAT, json=chat_body(), headers={"Authorization": "x"})
    assert unauthorized.status_code == 401


async def test_other_methods_and_paths_still_go_through_the_router(
        client: httpx.AsyncClient) -> None:
    assert (await client.get(CHAT)).status_code == 405
    assert (await client.post(CHAT + "/extra", json=chat_body())).status_code == 404
    assert (await client.get("/compatible-mode/v1/models")).status_code == 200
