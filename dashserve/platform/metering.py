"""UsageWriter: usage records queued off the request path, written in batches, never dropped.

``submit`` appends to a bounded in-memory queue (waiting for room when it is full). One owned
task flushes a batch every ``flush_interval_s`` or as soon as ``batch_size`` records wait, in a
single transaction that also adds to ``usage_daily`` and moves keys' ``last_used_at``. A failed
write is retried with exponential backoff for as long as the writer runs; ``stop`` drains the
queue, and whatever the database still refuses after ``drain_timeout_s`` goes to the spool file,
which the next ``start`` replays. Record ids make every write idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dashserve.platform import spool
from dashserve.platform.gate import UsageRecord
from dashserve.store import repos
from dashserve.store.db import Store

logger = logging.getLogger(__name__)

Item = spool.Item


@dataclass(frozen=True, slots=True)
class WriterConfig:
    max_queue: int = 10_000
    batch_size: int = 256
    flush_interval_s: float = 0.5
    retry_initial_s: float = 0.1
    retry_max_s: float = 2.0
    drain_timeout_s: float = 10.0
    spool_path: Path | None = None  # where records go if the database is down at shutdown


def _clip(value: str | None, size: int) -> str | None:
    return value[:size] if value is not None else None


def record_row(record_id: str, record: UsageRecord) -> dict[str, Any]:
    """The ``usage_records`` row for a record (strings clipped to their columns)."""
    return {
        "record_id": record_id,
        "request_id": _clip(record.request_id, 128),
        "key_id": record.key_id,
        "key_prefix": _clip(record.key_prefix, 32),
        "workspace": _clip(record.workspace or "", 200),
        "model": _clip(record.model, 200),
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cached_tokens": record.cached_tokens,
        "reasoning_tokens": record.reasoning_tokens,
        "image_tokens": record.image_tokens,
        "finish_reason": _clip(record.finish_reason, 32),
        "status_code": record.status_code,
        "ttft_ms": record.ttft_ms,
        "duration_ms": record.duration_ms,
        "created_at": record.created_at,
        "search_count": record.search_count,
    }


def daily_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows pre-aggregated per (UTC day, workspace, key, model) for ``usage_daily``."""
    totals: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key_ref = row["key_id"] or row["key_prefix"]
        group = (row["created_at"].date(), row["workspace"], key_ref, row["model"])
        total = totals.setdefault(group, {
            "day": group[0], "workspace": group[1], "key_id": key_ref, "model": group[3],
            "key_prefix": row["key_prefix"], "num_requests": 0, "num_errors": 0,
            **{name: 0 for name in repos.USAGE_SUMS},
        })
        total["num_requests"] += 1
        total["num_errors"] += int(row["status_code"] >= 400)
        for name in repos.USAGE_SUMS:
            total[name] += row[name]
    return list(totals.values())


async def write_batch(store: Store, items: Sequence[Item]) -> int:
    """Store records whose ids are new, with their roll-up, in one transaction; returns how many."""
    unique = dict(items)
    async with store.transaction() as session:
        known = await repos.existing_record_ids(session, record_ids=list(unique))
        rows = [record_row(rid, rec) for rid, rec in unique.items() if rid not in known]
        await repos.insert_usage(session, rows=rows)
        await repos.add_daily(session, rows=daily_rows(rows))
        last_used: dict[str, Any] = {}
        for row in rows:
            key_id = row["key_id"]
            if key_id and (key_id not in last_used or row["created_at"] > last_used[key_id]):
                last_used[key_id] = row["created_at"]
        await repos.touch_keys(session, last_used=last_used)
    return len(rows)


class UsageWriter:
    """Owns the metering queue and its flush task; see the module docstring."""

    def __init__(self, store: Store, config: WriterConfig | None = None) -> None:
        self._store = store
        self._config = config or WriterConfig()
        self._buffer: deque[Item] = deque()
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._space = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._drain_deadline = 0.0
        self._replay_left = 0
        self.num_written = 0
        self.num_write_errors = 0
        self.num_spooled = 0

    @property
    def num_pending(self) -> int:
        """Records submitted but not yet stored (queued plus the batch being written)."""
        return len(self._buffer) + self._in_flight

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._config.spool_path is not None:
            replayed = spool.claim(self._config.spool_path)
            if replayed:
                logger.warning("replaying %d spooled usage records", len(replayed))
            self._replay_left = len(replayed)
            self._buffer.extend(replayed)
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def submit(self, record: UsageRecord) -> None:
        """Queue a record; waits for room when the queue is full, never drops it."""
        item = (uuid.uuid4().hex, record)
        if self._task is None or self._stopping:
            self._spool_or_log([item], "the usage writer is not running")
            return
        while len(self._buffer) >= self._config.max_queue:
            logger.error(
                "usage queue full (%d records): waiting for the database", len(self._buffer)
            )
            self._space.clear()
            await self._space.wait()
        self._buffer.append(item)
        self._wakeup.set()
        if len(self._buffer) >= self._config.batch_size:
            self._full.set()

    async def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything submitted so far is stored (for tests and health checks)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.num_pending and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.num_pending == 0

    async def stop(self) -> None:
        """Drain: write everything queued, spooling what the database still refuses at the end."""
        if self._task is None:
            return
        self._stopping = True
        self._drain_deadline = asyncio.get_running_loop().time() + self._config.drain_timeout_s
        self._wakeup.set()
        self._full.set()
        await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._buffer) < self._config.batch_size and not self._stopping:
                self._full.clear()
                try:
                    await asyncio.wait_for(self._full.wait(), self._config.flush_interval_s)
                except asyncio.TimeoutError:  # the flush interval passed
                    pass
            size = min(len(self._buffer), self._config.batch_size)
            batch = [self._buffer.popleft() for _ in range(size)]
            self._in_flight = len(batch)
            self._space.set()
            try:
                await self._write_until_done(batch)
            finally:
                self._in_flight = 0

    async def _write_until_done(self, batch: list[Item]) -> None:
        delay = self._config.retry_initial_s
        loop = asyncio.get_running_loop()
        while True:
            try:
                self.num_written += await write_batch(self._store, batch)
                self._note_replayed(len(batch))
                return
            except Exception as exc:  # noqa: BLE001 - any failure is retried, never dropped
                self.num_write_errors += 1
                logger.error(
                    "usage write of %d records failed (%d queued), retrying in %.1fs: %s",
                    len(batch), len(self._buffer), delay, exc,
                )
            if self._stopping and loop.time() >= self._drain_deadline:
                rest = batch + list(self._buffer)
                self._buffer.clear()
                self._spool_or_log(rest, "the database is still unavailable at shutdown")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._config.retry_max_s)

    def _note_replayed(self, count: int) -> None:
        if self._replay_left <= 0:
            return
        self._replay_left -= count
        if self._replay_left <= 0 and self._config.spool_path is not None:
            spool.release(self._config.spool_path)

    def _spool_or_log(self, items: list[Item], why: str) -> None:
        path = self._config.spool_path
        if path is not None:
            try:
                self.num_spooled += spool.append(path, items)
                logger.error("%s: spooled %d usage records to %s", why, len(items), path)
                return
            except OSError as exc:
                logger.error("could not spool usage records to %s: %s", path, exc)
        for rid, rec in items:
            logger.error("%s: usage record lost: %s %s", why, rid, rec)
