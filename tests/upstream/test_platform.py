"""The platform over an upstream pool, through the real app: keys, RPM, metering rows and
metrics as for the local engine; killing one upstream in a load run leaves only 200, 429
and 503 answers and no 200 without its usage record."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from dashserve.api.admin import admin_router, metrics_router
from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.platform.state import PlatformSettings, PlatformState, prepare_platform
from dashserve.store import repos
from dashserve.upstream.pool import Pool
from tests.upstream.conftest import FakeUpstream, until

NATIVE = "/api/v1/services/aigc/text-generation/generation"
CHAT = "/compatible-mode/v1/chat/completions"


def body(content: str = "hi") -> dict[str, Any]:
    return {"model": "qwen-plus", "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": {"max_tokens": 64}}


@asynccontextmanager
async def front(tmp_path: Path, db_url: str, pool: Pool, shown: list[str],
                **platform: Any) -> AsyncIterator[tuple[httpx.AsyncClient, PlatformState]]:
    state = prepare_platform(PlatformSettings(data_dir=tmp_path, database_url=db_url, **platform),
                             on_bootstrap_key=shown.append)
    app = create_app(Settings(data_dir=tmp_path), {"qwen-plus": pool}, state.gate)
    app.state.platform = state
    app.include_router(admin_router())
    app.include_router(metrics_router())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
            yield c, state


async def test_keys_limits_metering_and_metrics_over_a_pool(
        tmp_path: Path, db_url: str, fake_upstreams: Callable[..., list[FakeUpstream]],
        make_pool: Callable[..., Pool]) -> None:
    ups = fake_upstreams(2, num_tokens=6)
    shown: list[str] = []
    async with front(tmp_path, db_url, make_pool([u.url for u in ups]), shown) as (c, state):
        admin = {"Authorization": f"Bearer {shown[0]}"}
        r = await c.post("/admin/v1/keys", headers=admin,
                         json={"rpm": 5, "workspace": "ws1", "models": ["qwen-plus"]})
        key = {"Authorization": f"Bearer {r.json()['secret']}"}
        r = await c.post(NATIVE, headers={"Authorization": "Bearer sk-nope"}, json=body())
        assert r.status_code == 401
        answers = await asyncio.gather(*(c.post(NATIVE, headers=key, json=body(f"q{i}"))
                                         for i in range(8)))
        assert Counter(a.status_code for a in answers) == {200: 5, 429: 3}
        ok = [a.json() for a in answers if a.status_code == 200]
        assert all(a["usage"]["output_tokens"] == 6 and a["usage"]["input_tokens"] > 0
                   for a in ok)
        metrics = (await c.get("/metrics")).text
        assert 'dashserve_requests_total{model="qwen-plus",status="200"} 5.0' in metrics
    async with state.store.transaction() as s:
        rows = await repos.select_records(s)
    by_id = {r["request_id"]: r for r in rows if r["status_code"] == 200}
    assert sorted(by_id) == sorted(a["request_id"] for a in ok)
    for a in ok:
        row = by_id[a["request_id"]]
        assert (row["input_tokens"], row["output_tokens"]) == (
            a["usage"]["input_tokens"], a["usage"]["output_tokens"])
        assert row["workspace"] == "ws1"
    assert Counter(r["status_code"] for r in rows if r["status_code"] != 200) == {429: 3}


async def test_stream_and_compatible_mode_over_a_pool_report_upstream_cache(
        tmp_path: Path, db_url: str, fake_upstreams: Callable[..., list[FakeUpstream]],
        make_pool: Callable[..., Pool]) -> None:
    (up,) = fake_upstreams(1, num_tokens=4)
    shown: list[str] = []
    long = "The same long system prompt for every request. " * 8
    async with front(tmp_path, db_url, make_pool([up.url]), shown) as (c, _):
        key = {"Authorization": f"Bearer {shown[0]}"}
        chat = {"model": "qwen-plus", "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "system", "content": long},
                             {"role": "user", "content": "hello"}]}
        for _ in range(2):
            r = await c.post(CHAT, headers=key, json=chat)
            assert r.status_code == 200
        lines = [ln for ln in r.text.splitlines() if ln.startswith("data:")]
        assert lines[-1] == "data: [DONE]"
        usage = json.loads(lines[-2][5:])["usage"]
        assert usage["completion_tokens"] == 4
        assert usage["prompt_tokens_details"]["cached_tokens"] > 0


async def test_killing_one_upstream_in_a_load_run(
        tmp_path: Path, db_url: str, fake_upstreams: Callable[..., list[FakeUpstream]],
        make_pool: Callable[..., Pool]) -> None:
    ups = fake_upstreams(2, num_tokens=20, token_delay_ms=10)
    shown: list[str] = []
    async with front(tmp_path, db_url, make_pool([u.url for u in ups]), shown,
                     static_keys=("sk-load",)) as (c, state):
        key = {"Authorization": "Bearer sk-load"}

        async def one(i: int) -> httpx.Response:
            await asyncio.sleep(0.01 * i)  # a steady arrival of requests
            return await c.post(NATIVE, headers=key, json=body(f"load {i} " * (i % 5 + 1)))

        tasks = [asyncio.create_task(one(i)) for i in range(60)]
        await until(lambda: all(u.stats()["active"] > 0 for u in ups), what="both busy")
        ups[0].kill()
        answers = await asyncio.gather(*tasks)
    statuses = Counter(a.status_code for a in answers)
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses[200] >= 30  # the survivor takes over
    ok = {a.json()["request_id"]: a.json() for a in answers if a.status_code == 200}
    assert all(a["usage"]["output_tokens"] == 20 for a in ok.values())
    for a in answers:
        if a.status_code == 503:
            assert a.json()["code"] == "ModelUnavailable"
            assert "127.0.0.1" not in a.text  # no upstream address reaches a client
    async with state.store.transaction() as s:
        rows = await repos.select_records(s)
    billed = {r["request_id"]: r for r in rows if r["status_code"] == 200}
    assert set(ok) <= set(billed)  # no 200 without its usage record
    assert all(billed[i]["output_tokens"] == 20 for i in ok)


async def test_what_the_kind_cannot_do_is_a_dashscope_400(
        tmp_path: Path, db_url: str, fake_upstreams: Callable[..., list[FakeUpstream]],
        make_pool: Callable[..., Pool]) -> None:
    (up,) = fake_upstreams(1)
    shown: list[str] = []
    async with front(tmp_path, db_url, make_pool([up.url], kind="llamacpp"), shown) as (c, _):
        key = {"Authorization": f"Bearer {shown[0]}"}
        refused = {**body(), "parameters": {"n": 2, "result_format": "message"}}
        r = await c.post(NATIVE, headers=key, json=refused)
        assert r.status_code == 400
        assert r.json()["code"] == "InvalidParameter" and "llamacpp" in r.json()["message"]
        assert up.stats()["requests"] == 0  # refused before anything was sent


async def test_a_seed_on_sglang_servers_that_ignore_it_is_a_dashscope_400(
        tmp_path: Path, db_url: str, fake_upstreams: Callable[..., list[FakeUpstream]],
        make_pool: Callable[..., Pool]) -> None:
    (up,) = fake_upstreams(1, num_tokens=3)  # /server_info: no deterministic inference
    shown: list[str] = []
    async with front(tmp_path, db_url, make_pool([up.url], kind="sglang"), shown) as (c, _):
        key = {"Authorization": f"Bearer {shown[0]}"}
        seeded = {**body(), "parameters": {"seed": 42, "result_format": "message"}}
        r = await c.post(NATIVE, headers=key, json=seeded)
        assert r.status_code == 400, r.text
        assert (r.json()["code"], up.stats()["requests"]) == ("InvalidParameter", 0)
        assert "seed" in r.json()["message"] and r.json()["request_id"]
        chat = {"model": "qwen-plus", "seed": 42, "max_tokens": 3,
                "messages": [{"role": "user", "content": "hi"}]}
        r = await c.post(CHAT, headers=key, json=chat)
        assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
        r = await c.post(NATIVE, headers=key, json=body())  # the default seed is served
        assert r.status_code == 200 and up.stats()["requests"] == 1


async def test_a_run_started_on_stale_room_is_refused_exactly_and_billed_nothing(
        tmp_path: Path, db_url: str, redis_url: str,
        fake_upstreams: Callable[..., list[FakeUpstream]],
        make_pool: Callable[..., Pool]) -> None:
    """Two fronts share one key's RPM through Redis. Front A, having admitted the key once
    with room to spare, starts its next request while Redis admits it; front B has taken
    the rest of the minute meanwhile: A's run is aborted, answered 429, and billed nothing."""
    (up,) = fake_upstreams(1, num_tokens=4, token_delay_ms=50)
    shown: list[str] = []
    async with front(tmp_path / "a", db_url, make_pool([up.url]), shown,
                     redis_url=redis_url) as (a, state):
        admin = {"Authorization": f"Bearer {shown[0]}"}
        r = await a.post("/admin/v1/keys", headers=admin, json={"rpm": 6})
        key = {"Authorization": f"Bearer {r.json()['secret']}"}
        answers = [await a.post(NATIVE, headers=key, json=body("a1"))]
        async with front(tmp_path / "b", db_url, make_pool([up.url]), [],
                         redis_url=redis_url) as (b, _):
            for i in range(5):
                answers.append(await b.post(NATIVE, headers=key, json=body(f"b{i}")))
        assert [x.status_code for x in answers] == [200] * 6
        assert up.stats()["requests"] == 6
        early = await a.post(NATIVE, headers=key, json=body("a2"))  # sent, then refused
        assert early.status_code == 429 and early.json()["code"] == "Throttling.RateQuota"
        assert up.stats()["requests"] == 7
        await until(lambda: up.stats()["disconnected"] == 1, what="the upstream stream closed")
        late = await a.post(NATIVE, headers=key, json=body("a3"))  # waits for its admission
        assert late.status_code == 429 and up.stats()["requests"] == 7
    async with state.store.transaction() as s:
        rows = await repos.select_records(s)
    assert Counter(r["status_code"] for r in rows) == {200: 6, 429: 2}
    refused = {r["request_id"]: r for r in rows if r["status_code"] == 429}
    assert set(refused) == {early.json()["request_id"], late.json()["request_id"]}
    assert all(r["input_tokens"] == r["output_tokens"] == 0 for r in refused.values())
    assert up.stats()["completed"] == 6
