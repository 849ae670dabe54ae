"""/metrics stays small and well-formed whatever clients send; every error answer is counted
by status and code, and billed to its key as a zero-token error row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.platform.reports import UsageQuery, usage_report
from dashserve.platform.state import PlatformSettings, PlatformState, prepare_platform
from dashserve.store import repos
from tests.reliability.conftest import CHAT, NATIVE
from tests.utils.fake_engine import FakeEngine

STATIC = "sk-static-reliability"


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


@pytest.fixture
async def served(tmp_path: Path, db_url: str  # noqa: F811 - the fixture
                 ) -> AsyncIterator[tuple[httpx.AsyncClient, PlatformState]]:
    platform = prepare_platform(PlatformSettings(
        data_dir=tmp_path, database_url=db_url, static_keys=(STATIC,), admin_keys=("sk-admin",)))
    engine = FakeEngine(token_delay_s=0.05)
    app = create_app(Settings(data_dir=tmp_path, max_inflight_per_model=2,
                              max_body_bytes=1 << 20),
                     {"qwen-plus": engine, "qwen-max": engine}, platform.gate, platform=platform)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
            yield c, platform


async def test_a_lone_surrogate_model_name_does_not_break_metrics(served) -> None:
    client, _ = served
    body = b'{"model": "\\ud800x", "input": {"messages": []}}'
    r = await client.post(NATIVE, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    r = await client.post(NATIVE, content=body, headers={"Authorization": f"Bearer {STATIC}"})
    assert r.status_code in (400, 404)
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    labels = {lab.get("model") for lab, _ in samples(metrics.text, "dashserve_requests_total")}
    assert labels <= {"unknown", "qwen-plus", "qwen-max"}


async def test_distinct_model_names_do_not_grow_metrics(served) -> None:
    client, _ = served
    auth = {"Authorization": f"Bearer {STATIC}"}

    async def burst(start: int) -> None:
        await asyncio.gather(*(client.post(CHAT, headers=auth if i % 2 else {}, json={
            "model": f"no-such-model-{i}", "messages": [{"role": "user", "content": "x"}]})
            for i in range(start, start + 100)))

    def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {(s.name, tuple(sorted(s.labels.items())))
                for family in text_string_to_metric_families(text) for s in family.samples}

    await burst(0)
    after_100 = series((await client.get("/metrics")).text)
    await burst(100)
    await burst(200)
    metrics = (await client.get("/metrics")).text
    assert series(metrics) == after_100  # no new series, whatever the names
    assert len(metrics.encode()) < 8000
    assert "no-such-model" not in metrics


async def test_every_error_is_counted_by_status_and_code_and_billed_to_its_key(
        served) -> None:
    client, platform = served
    auth = {"Authorization": f"Bearer {STATIC}"}
    chat = {"model": "qwen-plus", "messages": [{"role": "user", "content": "x"}]}
    assert (await client.post(CHAT, json=chat)).status_code == 401
    assert (await client.post(CHAT, headers=auth, json={**chat, "temperature": 9})
            ).status_code == 400
    assert (await client.post(CHAT, headers=auth, json={**chat, "model": "nope"})
            ).status_code == 404
    assert (await client.post(CHAT, headers=auth, content=b"x" * (2 << 20))).status_code == 413
    answers = await asyncio.gather(*(client.post(NATIVE, headers=auth, json={
        "model": "qwen-max", "input": {"messages": chat["messages"]}}) for _ in range(5)))
    busy = [a for a in answers if a.status_code == 429]
    assert len(busy) == 3 and busy[0].json()["code"] == "Throttling"
    metrics = (await client.get("/metrics")).text
    errors = {(lab["status"], lab["code"]): v
              for lab, v in samples(metrics, "dashserve_errors_total")}
    assert errors == {("401", "InvalidApiKey"): 1.0, ("400", "InvalidParameter"): 1.0,
                      ("404", "ModelNotFound"): 1.0, ("413", "BadRequest.TooLarge"): 1.0,
                      ("429", "Throttling"): 3.0}
    requests = {(lab["model"], lab["status"]): v
                for lab, v in samples(metrics, "dashserve_requests_total")}
    assert requests[("qwen-max", "429")] == 3.0 and requests[("qwen-max", "200")] == 2.0
    assert requests[("unknown", "404")] == 1.0
    assert await platform.writer.wait_idle()
    async with platform.store.transaction() as session:
        rows = await repos.select_records(session)
    errors_rows = sorted(r["status_code"] for r in rows if r["status_code"] >= 400)
    assert errors_rows == [400, 404, 413, 429, 429, 429]  # the 401 has no key to bill
    assert all(r["input_tokens"] == r["output_tokens"] == 0 for r in rows
               if r["status_code"] >= 400)
    report = await usage_report(platform.store, UsageQuery(by="key"))
    assert [(row["num_requests"], row["num_errors"]) for row in report] == [(8, 6)]
