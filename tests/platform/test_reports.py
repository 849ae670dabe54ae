"""platform.reports: roll-up reports equal a brute-force sum over the raw records."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from dashserve.errors import InvalidRequest
from dashserve.platform.gate import UsageRecord
from dashserve.platform.metering import write_batch
from dashserve.platform.reports import UsageQuery, recent_records, usage_report
from dashserve.platform.timespec import parse_time
from dashserve.store.db import Store

T0 = datetime(2026, 11, 18, 0, 0, tzinfo=timezone.utc)


def make(at: datetime, key: str | None, model: str, tokens: int) -> tuple[str, UsageRecord]:
    rec = UsageRecord(
        request_id=uuid.uuid4().hex, key_id=key, key_prefix=(key or "static-00000000")[:11],
        workspace="ws" if key == "k2" else "default", model=model, input_tokens=tokens,
        output_tokens=tokens + 1, cached_tokens=0, reasoning_tokens=1, finish_reason="stop",
        status_code=200 if tokens % 5 else 500, ttft_ms=1.0, duration_ms=2.0, created_at=at,
    )
    return uuid.uuid4().hex, rec


@pytest.fixture
async def seeded(store: Store) -> list[UsageRecord]:
    items = []
    for i in range(60):  # every 90 minutes over ~3.75 days
        key = [None, "k1", "k2"][i % 3]
        items.append(make(T0 + timedelta(minutes=90 * i), key, ["a", "b"][i % 2], i))
    await write_batch(store, items[:25])
    await write_batch(store, items[25:])
    return [rec for _, rec in items]


def brute(records: list[UsageRecord], by: str, since: datetime | None) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for r in records:
        if since is not None and r.created_at < since:
            continue
        group = {"day": r.created_at.date().isoformat(), "model": r.model,
                 "key": r.key_id or r.key_prefix, "workspace": r.workspace}[by]
        totals[group] += r.input_tokens + r.output_tokens
    return dict(totals)


@pytest.mark.parametrize("since_h", [None, 0, 13.5, 30])
async def test_reports_match_raw_records(store: Store, seeded: list[UsageRecord],
                                         since_h: float | None) -> None:
    since = None if since_h is None else T0 + timedelta(hours=since_h)
    for by in ("day", "model", "key", "workspace"):
        rows = await usage_report(store, UsageQuery(by=by, since=since))
        field = "key_id" if by == "key" else by
        got = {str(r[field]): r["total_tokens"] for r in rows}
        assert got == brute(seeded, by, since), by


async def test_filters_and_errors(store: Store, seeded: list[UsageRecord]) -> None:
    query = UsageQuery(by="model", key="k1", since=T0 + timedelta(hours=5))
    rows = await usage_report(store, query)
    expected = [r for r in seeded if r.key_id == "k1" and r.created_at >= T0 + timedelta(hours=5)]
    assert sum(r["num_requests"] for r in rows) == len(expected)
    assert sum(r["num_errors"] for r in rows) == sum(r.status_code >= 400 for r in expected)
    static = await usage_report(store, UsageQuery(by="key", key="static-0000"))
    assert [r["num_requests"] for r in static] == [20]
    ws = await usage_report(store, UsageQuery(by="workspace", workspace="ws"))
    assert [r["workspace"] for r in ws] == ["ws"]
    with pytest.raises(InvalidRequest):
        UsageQuery(by="hour")


async def test_recent_records_newest_first(store: Store, seeded: list[UsageRecord]) -> None:
    rows = await recent_records(store, limit=3, model="a")
    newest = sorted((r for r in seeded if r.model == "a"), key=lambda r: r.created_at)[-3:]
    assert [r["request_id"] for r in rows] == [r.request_id for r in reversed(newest)]
    assert rows[0]["created_at"].endswith("+00:00")


def test_time_parsing() -> None:
    now = datetime(2026, 1, 10, 12, tzinfo=timezone.utc)
    assert parse_time("7d", future=False, now=now) == now - timedelta(days=7)
    assert parse_time("12h", future=True, now=now) == now + timedelta(hours=12)
    assert parse_time("2026-02-01", future=True) == datetime(2026, 2, 1, tzinfo=timezone.utc)
    assert parse_time("2026-02-01T08:00:00+08:00", future=True) == datetime(
        2026, 2, 1, tzinfo=timezone.utc
    )
    with pytest.raises(InvalidRequest):
        parse_time("soon", future=True)
