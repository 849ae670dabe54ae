"""platform.metering: batched usage writes that survive outages, lost acks and shutdown."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from dashserve.platform import spool
from dashserve.platform.gate import UsageRecord
from dashserve.platform.keys import KeyManager, KeySpec
from dashserve.platform.metering import UsageWriter, WriterConfig
from dashserve.store import repos
from dashserve.store.db import Store
from dashserve.store.tables import usage_daily, usage_records
from tests.utils.waiting import until

FAST = dict(flush_interval_s=0.05, retry_initial_s=0.05, retry_max_s=0.2)


def record(key_id: str | None = None, *, model: str = "qwen", tokens: int = 10,
           status: int = 200, prefix: str = "sk-test0000") -> UsageRecord:
    return UsageRecord(
        request_id="req-" + uuid.uuid4().hex, key_id=key_id, key_prefix=prefix,
        workspace="default", model=model, input_tokens=tokens, output_tokens=2 * tokens,
        cached_tokens=1, reasoning_tokens=0, finish_reason="stop", status_code=status,
        ttft_ms=12.5, duration_ms=80.0, created_at=datetime.now(timezone.utc),
    )


async def stored_request_ids(store: Store) -> list[str]:
    async with store.transaction() as s:
        return list((await s.execute(select(usage_records.c.request_id))).scalars())


async def daily_requests(store: Store) -> int:
    async with store.transaction() as s:
        value = (await s.execute(select(func.sum(usage_daily.c.num_requests)))).scalar_one()
    return int(value or 0)


async def test_records_land_with_rollup_and_last_use(store: Store) -> None:
    key = (await KeyManager(store).create(KeySpec())).key
    writer = UsageWriter(store, WriterConfig(**FAST))
    await writer.start()
    sent = [record(key.id, tokens=i) for i in range(1, 11)]
    sent.append(record(None, prefix="static-1234abcd", status=500))
    for r in sent:
        await writer.submit(r)
    assert await writer.wait_idle()
    await writer.stop()
    assert sorted(await stored_request_ids(store)) == sorted(r.request_id for r in sent)
    async with store.transaction() as s:
        by_key = {r["key_id"]: r for r in await repos.sum_daily(s, by="key")}
        assert by_key[key.id]["input_tokens"] == 55 and by_key[key.id]["output_tokens"] == 110
        assert by_key["static-1234abcd"]["num_errors"] == 1
        touched = await repos.get_key(s, key_id=key.id)
    assert touched is not None and touched.last_used_at == max(r.created_at for r in sent[:10])
    assert writer.num_written == 11 and writer.num_pending == 0


async def test_stop_drains_everything_queued(store: Store) -> None:
    writer = UsageWriter(store, WriterConfig(flush_interval_s=30.0, batch_size=1000))
    await writer.start()
    sent = [record() for _ in range(300)]
    for r in sent:
        await writer.submit(r)
    assert writer.num_pending == 300
    await writer.stop()
    assert len(await stored_request_ids(store)) == 300 and await daily_requests(store) == 300


async def test_outage_across_retries_loses_nothing(flaky: Any) -> None:
    writer = UsageWriter(flaky, WriterConfig(batch_size=16, **FAST))
    await writer.start()
    flaky.down = True
    sent = [record() for _ in range(50)]
    for r in sent:
        await writer.submit(r)
    await until(lambda: writer.num_write_errors >= 3)  # away for several retries
    assert writer.num_pending == 50
    flaky.down = False
    assert await writer.wait_idle(10)
    await writer.stop()
    ids = await stored_request_ids(flaky.inner)
    assert sorted(ids) == sorted(r.request_id for r in sent)  # each exactly once
    assert await daily_requests(flaky.inner) == 50


async def test_lost_commit_acknowledgement_does_not_duplicate(flaky: Any) -> None:
    writer = UsageWriter(flaky, WriterConfig(**FAST))
    await writer.start()
    flaky.fail_after_commit = 1  # the first batch commits, then the client sees an error
    sent = [record() for _ in range(5)]
    for r in sent:
        await writer.submit(r)
    assert await writer.wait_idle()
    await writer.stop()
    assert writer.num_write_errors == 1
    assert len(await stored_request_ids(flaky.inner)) == 5
    assert await daily_requests(flaky.inner) == 5


async def test_shutdown_during_outage_spools_then_replays(flaky: Any, tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    config = WriterConfig(spool_path=path, drain_timeout_s=0.3, **FAST)
    writer = UsageWriter(flaky, config)
    await writer.start()
    flaky.down = True
    sent = [record() for _ in range(20)]
    for r in sent:
        await writer.submit(r)
    await writer.stop()
    assert writer.num_spooled == 20 and path.exists()
    await writer.submit(record())  # after stop: spooled too, never dropped
    flaky.down = False
    again = UsageWriter(flaky, config)
    await again.start()
    assert await again.wait_idle()
    await again.stop()
    assert len(await stored_request_ids(flaky.inner)) == 21
    assert not path.exists() and not spool.replay_path(path).exists()


async def test_full_queue_waits_instead_of_dropping(flaky: Any) -> None:
    writer = UsageWriter(flaky, WriterConfig(max_queue=5, batch_size=5, **FAST))
    await writer.start()
    flaky.down = True
    sent = [record() for _ in range(20)]
    producer = asyncio.create_task(_submit_all(writer, sent))
    await until(lambda: writer.num_pending >= 5)  # the queue is full ...
    await asyncio.sleep(0)
    assert not producer.done()  # ... and the producer waits on it
    flaky.down = False
    await asyncio.wait_for(producer, 10)
    assert await writer.wait_idle()
    await writer.stop()
    assert len(await stored_request_ids(flaky.inner)) == 20


async def _submit_all(writer: UsageWriter, records: list[UsageRecord]) -> None:
    for r in records:
        await writer.submit(r)


async def test_sqlite_locked_by_another_process(tmp_path: Path) -> None:
    from dashserve.store.db import open_store

    db = tmp_path / "dashserve.db"
    store = await open_store(f"sqlite:///{db}")
    writer = UsageWriter(store, WriterConfig(**FAST))
    await writer.start()
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:  # another process holds the write lock until released
        conn = sqlite3.connect(db, timeout=5)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(10)
        conn.rollback()
        conn.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(5)
    sent = [record() for _ in range(10)]
    for r in sent:
        await writer.submit(r)
    await until(lambda: writer.num_write_errors >= 1)  # the lock made a write fail
    assert writer.num_pending == 10
    release.set()
    holder.join()
    assert await writer.wait_idle(10)
    await writer.stop()
    assert sorted(await stored_request_ids(store)) == sorted(r.request_id for r in sent)
    await store.close()


def test_spool_round_trip_and_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    items = [(uuid.uuid4().hex, record()) for _ in range(3)]
    assert spool.append(path, items) == 3
    with path.open("a") as f:
        f.write('{"record_id": "x", "rec')  # a crash mid-line
    spool.append(path, items[:1])  # a duplicate
    claimed = spool.claim(path)
    assert [rid for rid, _ in claimed] == [rid for rid, _ in items]
    assert claimed[0][1] == items[0][1]
    assert not path.exists() and spool.replay_path(path).exists()
    assert len(spool.claim(path)) == 3  # an unfinished replay is offered again
    spool.release(path)
    assert spool.claim(path) == []


@pytest.mark.parametrize("status", [200, 499])
def test_daily_rows_count_errors(status: int) -> None:
    from dashserve.platform.metering import daily_rows, record_row

    rows = [record_row("a", record(status=status)), record_row("b", record(status=status))]
    (row,) = daily_rows(rows)
    assert row["num_requests"] == 2 and row["num_errors"] == (2 if status >= 400 else 0)
