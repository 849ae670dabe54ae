"""Queries only tests ask of the store: the schema revision and the number of usage rows."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashserve.store.db import Store
from dashserve.store.tables import usage_records


async def current_revision(store: Store) -> str | None:
    """The schema revision recorded in the database (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    async with store.engine.connect() as conn:
        return await conn.run_sync(
            lambda c: MigrationContext.configure(c).get_current_revision()
        )


async def count_records(session: AsyncSession) -> int:
    """Rows in ``usage_records``."""
    query = select(func.count()).select_from(usage_records)
    return int((await session.execute(query)).scalar_one())
