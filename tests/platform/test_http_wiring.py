"""The platform behind the real app (FakeEngine): 403/401/429 over HTTP, usage holds the 200s
and the refusals."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.platform.state import PlatformSettings, prepare_platform
from dashserve.store import repos
from tests.utils.fake_engine import FakeEngine

NATIVE = "/api/v1/services/aigc/text-generation/generation"
BODY = {"model": "qwen-plus", "input": {"messages": [{"role": "user", "content": "hi"}]},
        "parameters": {}}


async def test_burst_over_http_matches_usage(tmp_path: Path, db_url: str) -> None:
    shown: list[str] = []
    platform = prepare_platform(
        PlatformSettings(data_dir=tmp_path, database_url=db_url), on_bootstrap_key=shown.append
    )
    app = create_app(Settings(data_dir=tmp_path), {"qwen-plus": FakeEngine()}, platform.gate,
                     platform=platform)
    async with app.router.lifespan_context(app):
        admin = {"Authorization": f"Bearer {shown[0]}"}
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
            r = await c.post("/admin/v1/keys", headers=admin,
                             json={"rpm": 50, "workspace": "ws1", "models": ["qwen-plus"]})
            secret = r.json()["secret"]
            key = {"Authorization": f"Bearer {secret}"}
            r = await c.post(NATIVE, headers={**key, "X-DashScope-WorkSpace": "ws2"}, json=BODY)
            assert r.status_code == 403 and r.json()["code"] == "Workspace.AccessDenied"
            answers = await asyncio.gather(*(c.post(NATIVE, headers=key, json=BODY)
                                             for _ in range(200)))
            assert Counter(a.status_code for a in answers) == {200: 50, 429: 150}
            refused = next(a for a in answers if a.status_code == 429)
            assert refused.json()["code"] == "Throttling.RateQuota"
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            ok_ids = sorted(a.json()["request_id"] for a in answers if a.status_code == 200)
            await c.delete(f"/admin/v1/keys/{secret[:11]}", headers=admin)
            r = await c.post(NATIVE, headers=key, json=BODY)
            assert r.status_code == 401  # revoked: refused on the very next request
            metrics = (await c.get("/metrics")).text
            assert 'dashserve_requests_total{model="qwen-plus",status="200"} 50.0' in metrics
    async with platform.store.transaction() as s:
        rows = await repos.select_records(s)
    ok_rows = [r for r in rows if r["status_code"] == 200]
    assert sorted(r["request_id"] for r in ok_rows) == ok_ids  # lifespan end drained the writer
    assert all(r["input_tokens"] > 0 and r["output_tokens"] > 0 for r in ok_rows)
    # refusals of a known key are error rows with zero tokens (the revoked key's 401 is not)
    refused = Counter(r["status_code"] for r in rows if r["status_code"] != 200)
    assert refused == {429: 150, 403: 1}
    assert all(r["input_tokens"] == r["output_tokens"] == 0 for r in rows
               if r["status_code"] != 200)
