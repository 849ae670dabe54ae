"""platform.db_gate: authentication before limits, access rules, metering, outages, bursts."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from dashserve.errors import (
    AccessDenied,
    AuthenticationFailed,
    ModelAccessDenied,
    ModelUnavailable,
    Throttled,
    WorkspaceAccessDenied,
)
from dashserve.platform.db_gate import DbGate, GateConfig
from dashserve.platform.gate import Admission, Principal, UsageRecord
from dashserve.platform.keys import KeySpec
from dashserve.platform.limits import InProcessLimiter, LimitPolicy
from dashserve.platform.metering import UsageWriter, WriterConfig
from dashserve.platform.metrics import PlatformMetrics
from dashserve.store import repos
from dashserve.store.db import Store, open_store
from tests.utils import store_queries
from tests.utils.waiting import until

FAST = WriterConfig(flush_interval_s=0.05, retry_initial_s=0.05, retry_max_s=0.2)


def build_gate(store: Store, **config: object) -> DbGate:
    return DbGate(
        store, limiter=InProcessLimiter(), writer=UsageWriter(store, FAST),
        metrics=PlatformMetrics(), config=GateConfig(**config),
    )


@pytest.fixture
async def gate(store: Store) -> AsyncIterator[DbGate]:
    g = build_gate(store, static_keys=("static-secret",), admin_keys=("admin-secret",))
    await g.start()
    yield g
    await g.stop()


def usage_for(admission: Admission, *, status: int = 200, tokens: int = 7) -> UsageRecord:
    p = admission.principal
    return UsageRecord(
        request_id=admission.request_id, key_id=p.key_id, key_prefix=p.key_prefix,
        workspace=p.workspace, model=admission.model, input_tokens=tokens,
        output_tokens=tokens, cached_tokens=0, reasoning_tokens=0, finish_reason="stop",
        status_code=status, ttft_ms=3.0, duration_ms=9.0, created_at=datetime.now(timezone.utc),
    )


async def count_records(store: Store) -> int:
    async with store.transaction() as s:
        return await store_queries.count_records(s)


async def test_static_keys(gate: DbGate) -> None:
    p = await gate.authenticate("static-secret", None, "qwen")
    assert p.key_id is None and p.workspace == "default" and not p.is_admin
    assert p.key_prefix.startswith("static-") and "secret" not in p.key_prefix
    assert (await gate.authenticate("static-secret", "default", "qwen")).workspace == "default"
    with pytest.raises(WorkspaceAccessDenied):  # static keys belong to the default workspace
        await gate.authenticate("static-secret", "ws9", "qwen")
    assert (await gate.authenticate("admin-secret", None, "qwen")).is_admin
    for bad in (None, "", "static-secreT", "sk-" + "0" * 32):
        with pytest.raises(AuthenticationFailed) as info:
            await gate.authenticate(bad, None, "qwen")
        assert not bad or bad not in info.value.message  # never echoes what was sent


async def test_database_keys_and_access_rules(gate: DbGate) -> None:
    issued = await gate.keys.create(KeySpec(name="n", workspace="ws1", allowed_models=("qwen",)))
    p = await gate.authenticate(issued.secret, None, "qwen")
    assert (p.key_id, p.key_prefix, p.workspace, p.name) == (
        issued.key.id, issued.key.prefix, "ws1", "n"
    )
    assert (await gate.authenticate(issued.secret, "ws1", "qwen")).workspace == "ws1"
    with pytest.raises(WorkspaceAccessDenied) as info:
        await gate.authenticate(issued.secret, "ws2", "qwen")
    assert getattr(info.value.principal, "key_id", None) == issued.key.id  # billed to the key
    with pytest.raises(ModelAccessDenied) as info2:
        await gate.authenticate(issued.secret, None, "other-model")
    assert getattr(info2.value.principal, "key_id", None) == issued.key.id


async def test_expired_key_is_refused(gate: DbGate) -> None:
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    issued = await gate.keys.create(KeySpec(expires_at=past))
    with pytest.raises(AuthenticationFailed):
        await gate.authenticate(issued.secret, None, "qwen")


async def test_revoked_key_fails_on_next_request_in_another_process(
    gate: DbGate, db_url: str
) -> None:
    other_store = await open_store(db_url)  # a second server process on the same database
    other = build_gate(other_store)
    await other.start()
    try:
        issued = await gate.keys.create(KeySpec(rpm=1000))
        await other.authenticate(issued.secret, None, "qwen")
        await gate.keys.revoke(issued.key.prefix)
        with pytest.raises(AuthenticationFailed):
            await other.authenticate(issued.secret, None, "qwen")
        with pytest.raises(AuthenticationFailed):
            await gate.authenticate(issued.secret, None, "qwen")
    finally:
        await other.stop()
        await other_store.close()


async def test_admin_authentication(gate: DbGate) -> None:
    assert (await gate.authenticate_admin("admin-secret")).is_admin
    admin = await gate.keys.create(KeySpec(is_admin=True))
    assert (await gate.authenticate_admin(admin.secret)).key_id == admin.key.id
    plain = await gate.keys.create(KeySpec())
    with pytest.raises(AccessDenied):
        await gate.authenticate_admin(plain.secret)
    with pytest.raises(AccessDenied):
        await gate.authenticate_admin("static-secret")
    with pytest.raises(AuthenticationFailed):
        await gate.authenticate_admin(None)


async def test_admit_applies_key_limits_and_finish_settles(gate: DbGate, store: Store) -> None:
    issued = await gate.keys.create(KeySpec(rpm=2, max_concurrency=1))
    p = await gate.authenticate(issued.secret, None, "qwen")
    first = await gate.admit(p, "r1", "qwen", 10)
    with pytest.raises(Throttled) as info:
        await gate.admit(p, "r2", "qwen", 10)
    assert info.value.code == "Throttling"  # the concurrency slot is taken
    await gate.finish(first, usage_for(first))
    second = await gate.admit(p, "r3", "qwen", 10)
    await gate.finish(second, usage_for(second))
    with pytest.raises(Throttled) as info:
        await gate.admit(p, "r4", "qwen", 10)
    assert info.value.code == "Throttling.RateQuota" and 0 < info.value.retry_after_s <= 60
    assert await gate.writer.wait_idle()
    assert await count_records(store) == 2


async def test_static_keys_use_static_limits(store: Store) -> None:
    g = build_gate(store, static_keys=("s1",), static_limits=LimitPolicy(rpm=1))
    await g.start()
    p = await g.authenticate("s1", None, "m")
    await g.admit(p, "a", "m", 1)
    with pytest.raises(Throttled):
        await g.admit(p, "b", "m", 1)
    await g.stop()


async def test_dead_database_still_serves_known_keys(flaky: Any) -> None:
    g = build_gate(flaky)
    await g.start()
    issued = await g.keys.create(KeySpec())
    await g.authenticate(issued.secret, None, "qwen")  # seen while the database is up
    stranger = await g.keys.create(KeySpec())
    flaky.down = True
    p = await g.authenticate(issued.secret, None, "qwen")
    admission = await g.admit(p, "during-outage", "qwen", 5)
    await g.finish(admission, usage_for(admission))
    with pytest.raises(ModelUnavailable) as info:
        await g.authenticate(stranger.secret, None, "qwen")  # never seen: cannot be checked
    assert "key store" in info.value.message
    await until(lambda: g.writer.num_write_errors >= 2)  # tried, and kept it
    assert g.writer.num_pending == 1
    flaky.down = False
    assert await g.writer.wait_idle(10)
    await g.stop()
    async with flaky.inner.transaction() as s:
        rows = await repos.select_records(s)
    assert [r["request_id"] for r in rows] == ["during-outage"]


async def test_no_secret_is_ever_logged(flaky: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    g = build_gate(flaky, static_keys=("static-topsecret-value",))
    await g.start()
    issued = await g.keys.create(KeySpec(rpm=1))
    p = await g.authenticate(issued.secret, None, "qwen")
    a = await g.admit(p, "r1", "qwen", 1)
    await g.finish(a, usage_for(a))
    with pytest.raises(Throttled):
        await g.admit(p, "r2", "qwen", 1)
    flaky.down = True
    await g.authenticate(issued.secret, None, "qwen")
    with pytest.raises(ModelUnavailable):
        await g.authenticate("sk-" + "f" * 32, None, "qwen")
    await g.authenticate("static-topsecret-value", None, "qwen")
    flaky.down = False
    await g.stop()
    assert "request r1 key=" in caplog.text and "key store unavailable" in caplog.text
    for secret in (issued.secret, "static-topsecret-value", "sk-" + "f" * 32):
        assert secret not in caplog.text


async def test_burst_of_200_matches_usage_exactly(gate: DbGate, store: Store) -> None:
    issued = await gate.keys.create(KeySpec(rpm=50, tpm=100_000, max_concurrency=200))
    statuses: dict[str, int] = {}

    async def one(i: int) -> None:
        request_id = f"burst-{i}-{uuid.uuid4().hex[:6]}"
        p: Principal = await gate.authenticate(issued.secret, None, "qwen")
        try:
            admission = await gate.admit(p, request_id, "qwen", 20)
        except Throttled as exc:  # the app hands every error answer to refuse()
            await gate.refuse(request_id, p, "qwen", exc)
            statuses[request_id] = 429
            return
        await asyncio.sleep(0.01)  # "generation"
        await gate.finish(admission, usage_for(admission))
        statuses[request_id] = 200

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(200)))
    assert set(statuses.values()) <= {200, 429} and len(statuses) == 200
    ok = sorted(r for r, s in statuses.items() if s == 200)
    assert len(ok) == 50
    await gate.stop()  # drains the writer
    async with store.transaction() as s:
        rows = await repos.select_records(s)
    assert sorted(r["request_id"] for r in rows if r["status_code"] == 200) == ok
    assert sum(r["status_code"] == 429 and r["output_tokens"] == 0 for r in rows) == 150
    assert time.monotonic() - started < 20
    body = gate.metrics.render()[0].decode()  # type: ignore[union-attr]
    assert 'dashserve_requests_total{model="qwen",status="429"} 150.0' in body
    assert 'dashserve_requests_total{model="qwen",status="200"} 50.0' in body
