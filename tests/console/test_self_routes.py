"""/admin/v1/me and /admin/v1/usage/self: any key sees itself and its own usage, nothing else."""

from __future__ import annotations

from pathlib import Path

import httpx

from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.platform.state import PlatformSettings, prepare_platform
from tests.utils.fake_engine import FakeEngine

CHAT = "/compatible-mode/v1/chat/completions"
ADMIN = {"Authorization": "Bearer admin-key"}
STATIC = {"Authorization": "Bearer static-key"}


def chat(model: str = "qwen-plus") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def test_keys_see_themselves_and_their_own_usage(tmp_path: Path, db_url: str) -> None:
    platform = prepare_platform(PlatformSettings(
        data_dir=tmp_path, database_url=db_url, static_keys=("static-key",),
        admin_keys=("admin-key",),
    ))
    engine = FakeEngine()
    app = create_app(Settings(data_dir=tmp_path), {"qwen-plus": engine, "qwen-max": engine},
                     platform.gate, platform=platform)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            made = (await c.post("/admin/v1/keys", headers=ADMIN, json={
                "name": "team", "workspace": "ws1", "models": ["qwen-plus"]})).json()
            other = (await c.post("/admin/v1/keys", headers=ADMIN, json={})).json()
            mine = {"Authorization": f"Bearer {made['secret']}"}
            theirs = {"Authorization": f"Bearer {other['secret']}"}

            me = (await c.get("/admin/v1/me", headers=mine)).json()
            assert me == {"object": "api_key", "id": made["id"], "prefix": made["prefix"],
                          "name": "team", "workspace": "ws1", "models": ["qwen-plus"],
                          "is_admin": False}
            admin_me = (await c.get("/admin/v1/me", headers=ADMIN)).json()
            assert admin_me["is_admin"] is True and admin_me["id"] is None
            assert admin_me["prefix"].startswith("static-")

            for _ in range(3):
                assert (await c.post(CHAT, headers=mine, json=chat())).status_code == 200
            assert (await c.post(CHAT, headers=theirs, json=chat("qwen-max"))).status_code == 200
            for _ in range(2):
                assert (await c.post(CHAT, headers=STATIC, json=chat())).status_code == 200
            assert await platform.writer.wait_idle()

            own = (await c.get("/admin/v1/usage/self?by=model", headers=mine)).json()
            assert own["by"] == "model"
            assert [(r["model"], r["num_requests"]) for r in own["data"]] == [("qwen-plus", 3)]
            everyone = (await c.get("/admin/v1/usage?by=key", headers=ADMIN)).json()["data"]
            row = next(r for r in everyone if r["key_id"] == made["id"])
            assert {k: own["data"][0][k] for k in ("input_tokens", "output_tokens")} == \
                {k: row[k] for k in ("input_tokens", "output_tokens")}
            by_day = (await c.get("/admin/v1/usage/self?since=7d", headers=theirs)).json()
            assert sum(r["num_requests"] for r in by_day["data"]) == 1
            static = (await c.get("/admin/v1/usage/self", headers=STATIC)).json()
            assert sum(r["num_requests"] for r in static["data"]) == 2

            # The admin routes stay closed to ordinary keys; a bad or revoked key gets 401.
            r = await c.get("/admin/v1/usage", headers=mine)
            assert r.status_code == 403
            assert (await c.get("/admin/v1/me")).status_code == 401
            r = await c.get("/admin/v1/usage/self?by=hour", headers=mine)
            assert r.status_code == 400 and r.json()["code"] == "InvalidParameter"
            await c.delete(f"/admin/v1/keys/{made['id']}", headers=ADMIN)
            r = await c.get("/admin/v1/usage/self", headers=mine)
            assert r.status_code == 401 and r.json()["code"] == "InvalidApiKey"
            assert "request_id" in r.json()
