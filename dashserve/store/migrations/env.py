"""Alembic environment: migrates the connection handed in by ``store.db``, or a URL for the CLI.

Programmatic use (the normal path) passes an open connection in
``config.attributes["connection"]``. The ``alembic`` command line may instead give
``-x url=postgresql://...`` or set ``sqlalchemy.url``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from dashserve.store.db import create_engine, resolve_database_url
from dashserve.store.tables import metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_url(url: str) -> None:
    engine = create_engine(resolve_database_url(url, None))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_configure)
    finally:
        await engine.dispose()


def _url_from_config() -> str | None:
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )


if context.is_offline_mode():
    context.configure(url=_url_from_config(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if given is not None:
        _configure(given)
    else:
        asyncio.run(_run_with_url(_url_from_config() or resolve_database_url(None, None)))
