"""The platform under faults and misuse: a PostgreSQL restart mid-load, the admin API during a
database outage and without ``Bearer``, static keys and workspaces."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.platform.keys import KeyManager
from dashserve.platform.revocations import NotifiedMark
from dashserve.platform.state import PlatformSettings, PlatformState, prepare_platform
from dashserve.store import repos
from dashserve.store.db import open_store
from tests.reliability.conftest import NATIVE
from tests.reliability.services import PostgresServer
from tests.utils.fake_engine import FakeEngine
from tests.utils.waiting import until

ADMIN = "sk-admin-reliability"
STATIC = "sk-static-reliability"
BODY = {"model": "qwen-plus", "input": {"messages": [{"role": "user", "content": "hi"}]}}


async def platform_app(data_dir: Path, url: str | None) -> tuple[httpx.AsyncClient,
                                                                  PlatformState, object]:
    platform = prepare_platform(PlatformSettings(
        data_dir=data_dir, database_url=url, static_keys=(STATIC,), admin_keys=(ADMIN,)))
    app = create_app(Settings(data_dir=data_dir), {"qwen-plus": FakeEngine(token_delay_s=0.01)},
                     platform.gate, platform=platform)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60), platform, app


@pytest.fixture
async def sqlite_app(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, PlatformState]]:
    client, platform, app = await platform_app(tmp_path, None)
    async with app.router.lifespan_context(app), client:  # type: ignore[attr-defined]
        yield client, platform


async def test_the_admin_api_needs_bearer_like_the_generation_apis(sqlite_app) -> None:
    client, _ = sqlite_app
    for header in (ADMIN, f"Token {ADMIN}", f"Basic {ADMIN}"):
        r = await client.get("/admin/v1/keys", headers={"Authorization": header})
        assert r.status_code == 401 and r.json()["code"] == "InvalidApiKey"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        r = await client.post(NATIVE, headers={"Authorization": header}, json=BODY)
        assert r.status_code == 401
    r = await client.get("/admin/v1/keys", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200


async def test_the_admin_api_answers_503_during_a_database_outage(
        sqlite_app, monkeypatch: pytest.MonkeyPatch) -> None:
    client, platform = sqlite_app

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT", {}, ConnectionRefusedError("database is down"))

    monkeypatch.setattr(platform.store, "transaction", down)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for method, path in (("GET", "/admin/v1/keys"), ("GET", "/admin/v1/usage"),
                         ("POST", "/admin/v1/keys")):
        r = await client.request(method, path, headers=admin, json={} if method == "POST" else None)
        assert r.status_code == 503, r.text
        body = r.json()
        assert set(body) == {"code", "message", "request_id"}
        assert body["code"] == "ServiceUnavailable"


async def test_static_keys_stay_in_the_default_workspace(sqlite_app) -> None:
    client, platform = sqlite_app
    auth = {"Authorization": f"Bearer {STATIC}"}
    r = await client.post(NATIVE, headers={**auth, "X-DashScope-WorkSpace": "ws-other"},
                          json=BODY)
    assert r.status_code == 403 and r.json()["code"] == "Workspace.AccessDenied"
    r = await client.post(NATIVE, headers={**auth, "X-DashScope-WorkSpace": "default"},
                          json=BODY)
    assert r.status_code == 200
    assert await platform.writer.wait_idle()
    async with platform.store.transaction() as session:
        rows = await repos.select_records(session)
    assert {r["workspace"] for r in rows} == {"default"}


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    if not PostgresServer.available():
        pytest.skip("no PostgreSQL server binaries")
    server = PostgresServer()
    server.init()
    server.start()
    yield server
    with contextlib.suppress(subprocess.CalledProcessError):  # stopped by the test already
        server.stop("immediate")
    server.remove()


async def test_a_postgresql_restart_mid_load_loses_no_usage(postgres: PostgresServer,
                                                            tmp_path: Path) -> None:
    client, platform, app = await platform_app(tmp_path, postgres.url)
    async with app.router.lifespan_context(app), client:  # type: ignore[attr-defined]
        admin = {"Authorization": f"Bearer {ADMIN}"}
        made = (await client.post("/admin/v1/keys", headers=admin, json={})).json()
        key = {"Authorization": f"Bearer {made['secret']}"}
        mark = platform.gate.keys.mark
        assert isinstance(mark, NotifiedMark) and mark.listening.is_set()
        before = mark.read()
        statuses: Counter[int] = Counter()
        ok_ids: list[str] = []

        async def load(n: int) -> None:
            for _ in range(n):
                r = await client.post(NATIVE, headers=key, json=BODY)
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    ok_ids.append(r.json()["request_id"])

        await asyncio.gather(*(load(5) for _ in range(4)))
        await asyncio.to_thread(postgres.stop, "fast")
        await asyncio.gather(*(load(5) for _ in range(4)))  # the key was seen: still served
        r = await client.get("/admin/v1/keys", headers=admin)
        assert r.status_code == 503 and r.json()["code"] == "ServiceUnavailable"
        await asyncio.to_thread(postgres.start)
        await asyncio.gather(*(load(5) for _ in range(4)))
        assert set(statuses) == {200}, statuses
        assert await platform.writer.wait_idle(timeout_s=30)
        # the revocation listener is back, with a new token, and hears another process
        await asyncio.wait_for(mark.listening.wait(), 30)
        listening = mark.read()
        assert listening not in (None, before)
        other = await open_store(postgres.url)
        await KeyManager(other).revoke(made["id"])  # as `dashserve keys revoke` does
        await other.close()
        await until(lambda: mark.read() != listening)
        assert (await client.post(NATIVE, headers=key, json=BODY)).status_code == 401
    check, check_platform, _ = await platform_app(tmp_path / "check", postgres.url)
    async with check_platform.store.transaction() as session:
        rows = await repos.select_records(session)
    await check_platform.store.close()
    await check.aclose()
    assert sorted(r["request_id"] for r in rows if r["status_code"] == 200) == sorted(ok_ids)


async def test_the_usage_window_is_configurable(tmp_path: Path) -> None:
    platform = prepare_platform(Settings(data_dir=tmp_path, usage_flush_s=0.05,
                                         api_keys=(STATIC,)).platform_settings())
    assert platform.writer._config.flush_interval_s == 0.05
    assert prepare_platform(Settings(data_dir=tmp_path / "b").platform_settings()).writer._config \
        .flush_interval_s == 0.5
