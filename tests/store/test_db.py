"""store.db: URL resolution, engine per backend, migrations to head on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from dashserve.store.db import (
    DB_FILENAME,
    MIGRATIONS_DIR,
    Store,
    default_data_dir,
    open_store,
    redact_url,
    resolve_database_url,
    upgrade_to_head,
)
from dashserve.store.tables import api_keys, metadata, usage_records
from tests.utils.store_queries import current_revision


def test_default_is_sqlite_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSERVE_DATABASE_URL", raising=False)
    url = resolve_database_url(None, tmp_path / "data")
    assert url == f"sqlite+aiosqlite:///{tmp_path / 'data' / DB_FILENAME}"
    assert (tmp_path / "data").is_dir()


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSERVE_DATABASE_URL", raising=False)
    monkeypatch.setenv("DASHSERVE_DATA_DIR", str(tmp_path / "env"))
    assert resolve_database_url(None, None).endswith(f"{tmp_path / 'env' / DB_FILENAME}")
    monkeypatch.delenv("DASHSERVE_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "dashserve"  # as the server settings say
    monkeypatch.setenv("DASHSERVE_DATABASE_URL", "postgres://u@h/db")
    assert resolve_database_url(None, None) == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:////tmp/x/y.db", "sqlite+aiosqlite:////tmp/x/y.db"),
    ],
)
def test_urls_are_normalised_to_async_drivers(given: str, expected: str) -> None:
    assert resolve_database_url(given, None) == expected


def test_unknown_scheme_and_redaction() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        resolve_database_url("mysql://h/db", None)
    assert "secret" not in redact_url("postgresql+psycopg://u:secret@h/db")


def test_migrations_ship_inside_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert list((MIGRATIONS_DIR / "versions").glob("0001_*.py"))


async def test_upgrade_creates_the_schema_and_is_idempotent(db_url: str) -> None:
    await upgrade_to_head(db_url)
    await upgrade_to_head(db_url)  # a second start changes nothing
    store = await open_store(db_url)
    try:
        assert await current_revision(store) == "0004_media"
        async with store.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), metadata
                )
            )
        assert {"api_keys", "usage_records", "usage_daily", "files", "alembic_version"} <= names
        assert diff == []  # the migration builds exactly what tables.py declares
    finally:
        await store.close()


async def test_datetimes_come_back_aware_utc(store: Store) -> None:
    local = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=8)))
    async with store.transaction() as s:
        await s.execute(
            usage_records.insert().values(
                record_id="r1", request_id="q1", key_id=None, key_prefix="p", workspace="w",
                model="m", input_tokens=1, output_tokens=2, cached_tokens=0, reasoning_tokens=0,
                finish_reason="stop", status_code=200, ttft_ms=None, duration_ms=1.0,
                created_at=local,
            )
        )
    async with store.transaction() as s:
        value = (await s.execute(select(usage_records.c.created_at))).scalar_one()
    assert value == local and value.tzinfo is not None and value.utcoffset() == timedelta(0)


async def test_transaction_rolls_back_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as s:
            await s.execute(
                api_keys.insert().values(
                    id="k1", prefix="sk-1", secret_hash="h" * 64, workspace="default",
                    is_admin=False, created_at=datetime.now(timezone.utc),
                )
            )
            raise RuntimeError("boom")
    async with store.transaction() as s:
        assert (await s.execute(select(api_keys.c.id))).first() is None


async def test_a_read_is_one_statement_outside_a_transaction(store: Store) -> None:
    async def count(conn: Any) -> int:
        return int((await conn.execute(select(func.count()).select_from(api_keys))).scalar())

    assert await store.read(count) == 0
    if store.dialect != "postgresql":
        return

    async def autocommit(conn: Any) -> bool:
        return bool((await conn.get_raw_connection()).driver_connection.autocommit)

    assert await store.read(autocommit)  # no BEGIN, no COMMIT
    async with store.transaction() as session:  # transactions are unchanged
        raw = await (await session.connection()).get_raw_connection()
        assert raw.driver_connection.autocommit is False


async def test_a_read_outlives_a_database_restart(pg_url: str) -> None:
    """A pooled read connection closed by the server (a restart, an idle timeout) is replaced:
    the read that finds it dead is tried again once, and succeeds."""
    import psycopg

    async def backend(conn: Any) -> int:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar())

    store = await open_store(pg_url)
    try:
        first = await store.read(backend)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [first])
        second = await store.read(backend)  # the pooled connection was dead
        assert second != first
        assert await store.read(backend) == second  # and the new one is pooled
    finally:
        await store.close()
