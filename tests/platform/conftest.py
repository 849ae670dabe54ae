"""Platform fixtures: SQLite and PostgreSQL stores, an injectable outage, a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy.exc import OperationalError

from dashserve.store.db import Store, open_store

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_BASE, connect_timeout=2):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False


@pytest.fixture(scope="session")
def pg_available() -> bool:
    return _pg_available()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path, pg_available: bool) -> Iterator[str]:
    """A database URL with nothing in it yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dashserve.db'}"
        return
    if not pg_available:
        pytest.skip("PostgreSQL is not running at 127.0.0.1:5432 (pg_ctlcluster 15 main start)")
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await open_store(db_url)
    try:
        yield s
    finally:
        await s.close()


class FlakyStore:
    """A Store whose transactions fail while ``down`` (a database outage, injected)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = False
        self.fail_after_commit = 0  # commits that succeed but report failure (lost acks)
        self.attempts = 0

    @property
    def engine(self):  # noqa: ANN201
        return self.inner.engine

    @property
    def dialect(self) -> str:
        return self.inner.dialect

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[object]:
        self.attempts += 1
        if self.down:
            raise OperationalError("BEGIN", {}, ConnectionRefusedError("database is down"))
        async with self.inner.transaction() as session:
            yield session
        if self.fail_after_commit > 0:
            self.fail_after_commit -= 1
            raise OperationalError("COMMIT", {}, ConnectionResetError("connection lost"))

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
def flaky(store: Store) -> FlakyStore:
    return FlakyStore(store)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    from redis.asyncio import Redis

    url = "redis://127.0.0.1:6379/0"
    client = Redis.from_url(url, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception:  # noqa: BLE001
        pytest.skip("Redis is not running at 127.0.0.1:6379 (redis-server --daemonize yes)")
    finally:
        await client.aclose()
    yield url
