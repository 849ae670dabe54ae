"""Database access: URL resolution, the async engine and session factory, and migrations."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

DATA_DIR_ENV = "DASHSERVE_DATA_DIR"
DATABASE_URL_ENV = "DASHSERVE_DATABASE_URL"
DB_FILENAME = "dashserve.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same in every dashserve process.
_MIGRATION_LOCK_ID = 0x64617368
T = TypeVar("T")

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def default_data_dir() -> Path:
    """``$DASHSERVE_DATA_DIR``, else ``$XDG_DATA_HOME/dashserve``, else ``~/.local/share/...``.

    The same rule as the server settings' ``data_dir``, so serve, keys and usage agree.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dashserve"


def resolve_database_url(database_url: str | None, data_dir: str | Path | None) -> str:
    """The async SQLAlchemy URL to use: the given one normalised, else SQLite in the data dir.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://`` (psycopg 3 async);
    ``sqlite:///`` becomes ``sqlite+aiosqlite:///``. Creates the data dir for SQLite.
    """
    database_url = database_url or os.environ.get(DATABASE_URL_ENV) or None
    if database_url is None:
        directory = Path(data_dir).expanduser() if data_dir else default_data_dir()
        directory.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{directory / DB_FILENAME}"
    url = make_url(database_url)
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(f"unsupported database URL scheme: {url.drivername}")
    url = url.set(drivername=driver)
    if driver.startswith("sqlite") and url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return url.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """The URL with any password hidden, for logs."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets `dashserve keys` write while a server reads; busy_timeout waits out short locks.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=2000")
    cursor.close()


def _pg_connect_args(url: URL) -> dict[str, Any]:
    return {"connect_timeout": 3} if url.drivername == "postgresql+psycopg" else {}


def create_engine(url: str) -> AsyncEngine:
    """An async engine for a URL already passed through ``resolve_database_url``."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 2})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=10,
        connect_args=_pg_connect_args(parsed),
    )


def _reader_engine(engine: AsyncEngine) -> AsyncEngine:
    """For ``Store.read``: on PostgreSQL a small pool of autocommit connections without the
    check-out ping, so a read is one round trip where a transaction takes four (ping, BEGIN,
    the query, COMMIT); elsewhere the engine itself."""
    if engine.dialect.name != "postgresql":
        return engine
    return create_async_engine(
        engine.url, isolation_level="AUTOCOMMIT", pool_size=4, max_overflow=8,
        connect_args=_pg_connect_args(engine.url),
    )


class Store:
    """Owns the engine; hands out sessions. One per process, created at start-up."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._reader = _reader_engine(engine)

    @property
    def url(self) -> str:
        return redact_url(self.engine.url.render_as_string(hide_password=False))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self._sessions() as session, session.begin():
            yield session

    async def read(self, query: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """The result of ``query``, one read that needs no transaction of its own (on
        PostgreSQL an autocommit connection: one round trip). A pooled connection the server
        has closed meanwhile (a restart) is dropped and the read tried once more."""
        try:
            async with self._reader.connect() as conn:
                return await query(conn)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        async with self._reader.connect() as conn:
            return await query(conn)

    async def close(self) -> None:
        if self._reader is not self.engine:
            await self._reader.dispose()
        await self.engine.dispose()


async def open_store(url: str, *, migrate: bool = True) -> Store:
    """Create the engine for ``url`` (normalised) and, by default, migrate to the latest schema."""
    engine = create_engine(resolve_database_url(url, None))
    if migrate:
        await upgrade_engine(engine)
    return Store(engine)


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade_sync(connection: Connection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


async def upgrade_engine(engine: AsyncEngine) -> None:
    """Run every pending migration, serialised across processes on PostgreSQL."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
        await conn.run_sync(_upgrade_sync)


async def upgrade_to_head(url: str) -> None:
    """Bring the database at ``url`` to the latest schema (idempotent)."""
    engine = create_engine(resolve_database_url(url, None))
    try:
        await upgrade_engine(engine)
    finally:
        await engine.dispose()
