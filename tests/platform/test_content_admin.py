"""Admin API for search documents and inspection rules; search counts in the usage table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from dashserve.api.admin import admin_router
from dashserve.api.admin.content_routes import content_router
from dashserve.api.errors import install_error_handlers
from dashserve.inspection.config import InspectionConfig, build_inspector
from dashserve.platform.gate import UsageRecord
from dashserve.platform.state import PlatformSettings, PlatformState
from dashserve.search.config import SearchConfig, build_search
from tests.utils.platform import build_platform

ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture
async def platform(tmp_path: Path, db_url: str) -> AsyncIterator[PlatformState]:
    p = await build_platform(PlatformSettings(
        data_dir=tmp_path, database_url=db_url, static_keys=("user-key",),
        admin_keys=("admin-key",)))
    yield p
    await p.close()


def make_app(platform: PlatformState, tmp_path: Path, *, local: bool = True) -> FastAPI:
    app = FastAPI()
    app.state.platform = platform
    config = SearchConfig(providers=("local",)) if local else SearchConfig()
    app.state.search = build_search(config, tmp_path)
    app.state.inspector = build_inspector(InspectionConfig(), tmp_path)
    install_error_handlers(app)
    app.include_router(admin_router())
    app.include_router(content_router())
    return app


@pytest.fixture
async def client(platform: PlatformState, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(platform, tmp_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
        yield c


async def test_admin_key_required(client: httpx.AsyncClient) -> None:
    for path in ("/admin/v1/search/documents", "/admin/v1/inspection/rules"):
        assert (await client.get(path)).status_code == 401
        r = await client.get(path, headers={"Authorization": "Bearer user-key"})
        assert r.status_code == 403
        assert (await client.get(path, headers=ADMIN)).status_code == 200


async def test_documents(client: httpx.AsyncClient) -> None:
    r = await client.post("/admin/v1/search/documents", headers=ADMIN, json={
        "title": "Release notes", "url": "https://docs.example/notes",
        "content": "Version 2 adds a quiet mode.", "site_name": "Docs"})
    assert r.status_code == 201
    doc = r.json()
    assert doc["title"] == "Release notes" and doc["source"] == "api" and doc["id"]
    r = await client.post("/admin/v1/search/documents", headers=ADMIN, json={
        "id": "faq", "title": "FAQ", "url": "https://docs.example/faq", "content": "Answers"})
    assert r.json()["id"] == "faq"
    listed = (await client.get("/admin/v1/search/documents", headers=ADMIN)).json()
    assert listed["total"] == 2 and [d["id"] for d in listed["data"]] == [doc["id"], "faq"]
    page = (await client.get("/admin/v1/search/documents?limit=1&offset=1",
                             headers=ADMIN)).json()
    assert [d["id"] for d in page["data"]] == ["faq"]
    assert (await client.get("/admin/v1/search/documents/faq", headers=ADMIN)).json()[
        "content"] == "Answers"
    found = (await client.get("/admin/v1/search?q=quiet%20mode", headers=ADMIN)).json()
    [local] = found["data"]
    assert local["provider"] == "local"
    assert [r["url"] for r in local["results"]] == ["https://docs.example/notes"]
    r = await client.delete("/admin/v1/search/documents/faq", headers=ADMIN)
    assert r.status_code == 200 and r.json()["deleted"]
    r = await client.delete("/admin/v1/search/documents/faq", headers=ADMIN)
    assert r.status_code == 404
    r = await client.post("/admin/v1/search/documents", headers=ADMIN,
                          json={"title": "", "url": "x", "content": "y"})
    assert r.status_code == 400


async def test_rules(client: httpx.AsyncClient) -> None:
    r = await client.post("/admin/v1/inspection/rules", headers=ADMIN,
                          json={"workspace": "ws-1", "kind": "regex", "pattern": r"\bsecret\b"})
    assert r.status_code == 201 and r.json()["workspace"] == "ws-1"
    rule_id = r.json()["id"]
    r = await client.post("/admin/v1/inspection/rules", headers=ADMIN,
                          json={"pattern": "forbidden"})
    assert r.status_code == 201 and r.json()["workspace"] == "*"
    assert r.json()["kind"] == "keyword"
    everything = (await client.get("/admin/v1/inspection/rules", headers=ADMIN)).json()["data"]
    assert len(everything) == 2
    ws1 = (await client.get("/admin/v1/inspection/rules?workspace=ws-1",
                            headers=ADMIN)).json()["data"]
    assert [x["id"] for x in ws1] == [rule_id]
    r = await client.post("/admin/v1/inspection/rules", headers=ADMIN,
                          json={"kind": "regex", "pattern": "(open"})
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter"
    assert (await client.delete(f"/admin/v1/inspection/rules/{rule_id}",
                                headers=ADMIN)).status_code == 200
    assert (await client.delete(f"/admin/v1/inspection/rules/{rule_id}",
                                headers=ADMIN)).status_code == 404


async def test_no_local_index(platform: PlatformState, tmp_path: Path) -> None:
    transport = httpx.ASGITransport(app=make_app(platform, tmp_path, local=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
        r = await c.get("/admin/v1/search/documents", headers=ADMIN)
        assert r.status_code == 400 and "not enabled" in r.json()["message"]
        assert (await c.get("/admin/v1/search?q=x", headers=ADMIN)).status_code == 400


async def test_search_count_is_stored(platform: PlatformState, client: httpx.AsyncClient,
                                      ) -> None:
    principal = await platform.gate.authenticate("user-key", None, "qwen")
    for i, count in enumerate((2, 0)):
        admission = await platform.gate.admit(principal, f"req-{i}", "qwen", 5)
        await platform.gate.finish(admission, UsageRecord(
            f"req-{i}", None, principal.key_prefix, principal.workspace, "qwen", 10, 5, 0, 0,
            "stop", 200, 4.0, 20.0, datetime.now(timezone.utc), search_count=count))
    assert await platform.writer.wait_idle()
    records = (await client.get("/admin/v1/usage/records", headers=ADMIN)).json()["data"]
    assert {r["request_id"]: r["search_count"] for r in records} == {"req-0": 2, "req-1": 0}
