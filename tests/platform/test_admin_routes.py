"""api.admin: key management and usage over HTTP, admin key only; /metrics exposition."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from dashserve.api.admin import admin_router, metrics_router
from dashserve.errors import AuthenticationFailed, DashServeError
from dashserve.platform.gate import UsageRecord
from dashserve.platform.state import PlatformSettings, PlatformState
from tests.utils.platform import build_platform

ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture
async def platform(tmp_path: Path, db_url: str) -> AsyncIterator[PlatformState]:
    p = await build_platform(PlatformSettings(
        data_dir=tmp_path, database_url=db_url, static_keys=("user-key",),
        admin_keys=("admin-key",),
    ))
    yield p
    await p.close()


@pytest.fixture
async def client(platform: PlatformState) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.platform = platform
    app.include_router(admin_router())
    app.include_router(metrics_router())

    @app.exception_handler(DashServeError)
    async def render(_: Request, exc: DashServeError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status_code)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
        yield c


async def test_admin_key_required(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/v1/keys")
    assert r.status_code == 401 and r.json()["code"] == "InvalidApiKey"
    r = await client.get("/admin/v1/keys", headers={"Authorization": "Bearer user-key"})
    assert r.status_code == 403 and r.json()["code"] == "AccessDenied"
    assert (await client.get("/admin/v1/keys", headers=ADMIN)).status_code == 200


async def test_key_lifecycle(client: httpx.AsyncClient, platform: PlatformState) -> None:
    r = await client.post("/admin/v1/keys", headers=ADMIN, json={
        "name": "svc", "workspace": "ws1", "models": ["qwen"], "rpm": 10, "expires": "7d",
    })
    assert r.status_code == 201
    created = r.json()
    secret = created["secret"]
    assert secret.startswith("sk-") and created["prefix"] == secret[:11] and created["rpm"] == 10
    assert (await platform.gate.authenticate(secret, "ws1", "qwen")).key_id == created["id"]
    listed = (await client.get("/admin/v1/keys", headers=ADMIN)).json()["data"]
    assert [k["id"] for k in listed] == [created["id"]] and "secret" not in listed[0]
    got = (await client.get(f"/admin/v1/keys/{created['prefix']}", headers=ADMIN)).json()
    assert got["workspace"] == "ws1" and got["models"] == ["qwen"] and got["expires_at"]
    r = await client.delete(f"/admin/v1/keys/{created['id']}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["revoked_at"] and not r.json()["is_active"]
    with pytest.raises(AuthenticationFailed):
        await platform.gate.authenticate(secret, "ws1", "qwen")
    assert (await client.get("/admin/v1/keys", headers=ADMIN)).json()["data"] == []
    r = await client.get("/admin/v1/keys?include_revoked=true", headers=ADMIN)
    assert len(r.json()["data"]) == 1
    r = await client.delete("/admin/v1/keys/sk-nothing", headers=ADMIN)
    assert r.status_code == 404


async def test_bad_requests(client: httpx.AsyncClient) -> None:
    r = await client.post("/admin/v1/keys", headers=ADMIN, json={"rpm": 0})
    assert r.status_code == 422
    r = await client.post("/admin/v1/keys", headers=ADMIN, json={"expires": "whenever"})
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter"
    r = await client.get("/admin/v1/usage?by=hour", headers=ADMIN)
    assert r.status_code == 400


async def test_usage_endpoints(client: httpx.AsyncClient, platform: PlatformState) -> None:
    principal = await platform.gate.authenticate("user-key", None, "qwen")
    for i in range(3):
        admission = await platform.gate.admit(principal, f"req-{i}", "qwen", 5)
        await platform.gate.finish(admission, UsageRecord(
            f"req-{i}", None, principal.key_prefix, principal.workspace, "qwen", 10, 5, 0, 0,
            "stop", 200, 4.0, 20.0, datetime.now(timezone.utc),
        ))
    assert await platform.writer.wait_idle()
    report = (await client.get("/admin/v1/usage?by=model&since=1d", headers=ADMIN)).json()
    assert report["by"] == "model"
    assert report["data"] == [{
        "model": "qwen", "num_requests": 3, "num_errors": 0, "input_tokens": 30,
        "output_tokens": 15, "cached_tokens": 0, "reasoning_tokens": 0, "total_tokens": 45,
    }]
    by_key = (await client.get(f"/admin/v1/usage?by=key&key={principal.key_prefix}",
                               headers=ADMIN)).json()["data"]
    assert by_key[0]["key_id"] == principal.key_prefix and by_key[0]["num_requests"] == 3
    records = (await client.get("/admin/v1/usage/records?limit=2", headers=ADMIN)).json()["data"]
    assert [r["request_id"] for r in records] == ["req-2", "req-1"]


async def test_metrics_endpoint(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "dashserve_usage_queue_depth" in r.text
