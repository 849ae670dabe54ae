"""Database fixtures shared by the store and platform tests: every test runs on SQLite and on
PostgreSQL (a fresh schema per test); and the local Redis, for shared rate limits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest

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


@contextmanager
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search path is a fresh schema, dropped afterwards."""
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
def pg_url(pg_available: bool) -> Iterator[str]:
    """A PostgreSQL URL with nothing in it yet (the test is skipped without a server)."""
    if not pg_available:
        pytest.skip("PostgreSQL is not running at 127.0.0.1:5432")
    with pg_schema_url() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path, pg_available: bool) -> Iterator[str]:
    """A database URL with nothing in it yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dashserve.db'}"
        return
    if not pg_available:
        pytest.skip("PostgreSQL is not running at 127.0.0.1:5432 (pg_ctlcluster 15 main start)")
    with pg_schema_url() as url:
        yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await open_store(db_url)
    try:
        yield s
    finally:
        await s.close()


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
