"""Keyword-only queries per aggregate: API keys, usage records and the daily roll-up."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from dashserve.store.tables import api_keys, usage_daily, usage_records

# notified inside every revocation's transaction on PostgreSQL (see platform/revocations.py)
REVOCATION_CHANNEL = "dashserve_key_revocations"
USAGE_SUMS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
GROUPINGS = ("day", "model", "key", "workspace")


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One row of ``api_keys``; ``allowed_models`` is None when every model is allowed."""

    id: str
    prefix: str
    secret_hash: str
    name: str | None
    workspace: str
    allowed_models: tuple[str, ...] | None
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    is_admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


def _key_row(row: Any) -> KeyRow:
    values = dict(row._mapping)
    models = values["allowed_models"]
    values["allowed_models"] = tuple(m for m in models.split(",") if m) if models else None
    values["is_admin"] = bool(values["is_admin"])
    return KeyRow(**values)


async def insert_key(session: AsyncSession, *, row: KeyRow) -> None:
    values = {f: getattr(row, f) for f in KeyRow.__slots__}
    values["allowed_models"] = ",".join(row.allowed_models) if row.allowed_models else None
    await session.execute(api_keys.insert().values(**values))


async def get_key_by_hash(session: AsyncSession | AsyncConnection, *,
                          secret_hash: str) -> KeyRow | None:
    result = await session.execute(select(api_keys).where(api_keys.c.secret_hash == secret_hash))
    row = result.first()
    return _key_row(row) if row is not None else None


async def get_key(session: AsyncSession, *, key_id: str) -> KeyRow | None:
    result = await session.execute(select(api_keys).where(api_keys.c.id == key_id))
    row = result.first()
    return _key_row(row) if row is not None else None


async def find_keys(session: AsyncSession, *, id_or_prefix: str) -> list[KeyRow]:
    """Keys whose id equals, or whose visible prefix starts with, the given text."""
    pattern = id_or_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    query = select(api_keys).where(
        (api_keys.c.id == id_or_prefix) | api_keys.c.prefix.like(pattern + "%", escape="\\")
    )
    return [_key_row(r) for r in (await session.execute(query)).all()]


async def list_keys(
    session: AsyncSession, *, include_revoked: bool = False, workspace: str | None = None
) -> list[KeyRow]:
    query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    if workspace is not None:
        query = query.where(api_keys.c.workspace == workspace)
    return [_key_row(r) for r in (await session.execute(query)).all()]


async def count_keys(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(api_keys))).scalar_one())


async def revoke_key(session: AsyncSession, *, key_id: str, at: datetime) -> bool:
    """Mark a key revoked; False if it does not exist or was already revoked."""
    result = await session.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def notify_revocation(session: AsyncSession) -> None:
    """Tell the servers listening that a key was revoked, when this transaction commits
    (PostgreSQL; a no-op elsewhere)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text(f"NOTIFY {REVOCATION_CHANNEL}"))


async def touch_keys(session: AsyncSession, *, last_used: dict[str, datetime]) -> None:
    """Move ``last_used_at`` forward for each key (never backward)."""
    for key_id, at in last_used.items():
        await session.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id)
            .where((api_keys.c.last_used_at.is_(None)) | (api_keys.c.last_used_at < at))
            .values(last_used_at=at)
        )


async def existing_record_ids(session: AsyncSession, *, record_ids: Sequence[str]) -> set[str]:
    query = select(usage_records.c.record_id).where(usage_records.c.record_id.in_(record_ids))
    return set((await session.execute(query)).scalars().all())


async def insert_usage(session: AsyncSession, *, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(usage_records.insert(), list(rows))


def _upsert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def add_daily(session: AsyncSession, *, rows: Iterable[dict[str, Any]]) -> None:
    """Add each pre-aggregated row to ``usage_daily`` (insert or increment)."""
    insert = _upsert(session.get_bind().dialect.name)
    for row in rows:
        stmt = insert(usage_daily).values(**row)
        increments = {
            name: usage_daily.c[name] + stmt.excluded[name]
            for name in ("num_requests", "num_errors", *USAGE_SUMS)
        }
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["day", "workspace", "key_id", "model"], set_=increments
            )
        )


def _group_columns(table: Any, by: str) -> list[Any]:
    if by == "day":
        return [table.c.day]
    if by == "model":
        return [table.c.model]
    if by == "workspace":
        return [table.c.workspace]
    if by == "key":
        return [table.c.key_id, table.c.key_prefix]
    raise ValueError(f"unknown grouping: {by}")


def _filters(table: Any, key_id: str | None, model: str | None, workspace: str | None) -> list[Any]:
    conditions = []
    if key_id is not None and table is usage_records:
        # Records of static keys have no key id; the roll-up names them by their prefix.
        conditions.append(
            (table.c.key_id == key_id)
            | (table.c.key_id.is_(None) & (table.c.key_prefix == key_id))
        )
    elif key_id is not None:
        conditions.append(table.c.key_id == key_id)
    if model is not None:
        conditions.append(table.c.model == model)
    if workspace is not None:
        conditions.append(table.c.workspace == workspace)
    return conditions


async def sum_daily(
    session: AsyncSession, *, by: str, since_day: date | None = None,
    key_id: str | None = None, model: str | None = None, workspace: str | None = None,
) -> list[dict[str, Any]]:
    """Totals from the roll-up, one dict per group (``by`` in GROUPINGS)."""
    groups = _group_columns(usage_daily, by)
    counts = ("num_requests", "num_errors", *USAGE_SUMS)
    sums = [func.sum(usage_daily.c[n]).label(n) for n in counts]
    query = select(*groups, *sums).group_by(*groups).order_by(*groups)
    conditions = _filters(usage_daily, key_id, model, workspace)
    if since_day is not None:
        conditions.append(usage_daily.c.day >= since_day)
    result = await session.execute(query.where(*conditions))
    return [dict(r._mapping) for r in result.all()]


async def select_records(
    session: AsyncSession, *, since: datetime | None = None, until: datetime | None = None,
    key_id: str | None = None, model: str | None = None, workspace: str | None = None,
    limit: int | None = None, newest_first: bool = False,
) -> list[dict[str, Any]]:
    """Raw usage records matching the filters, oldest first unless ``newest_first``."""
    conditions = _filters(usage_records, key_id, model, workspace)
    if since is not None:
        conditions.append(usage_records.c.created_at >= since)
    if until is not None:
        conditions.append(usage_records.c.created_at < until)
    order = usage_records.c.id.desc() if newest_first else usage_records.c.id
    query = select(usage_records).where(*conditions).order_by(order).limit(limit)
    return [dict(r._mapping) for r in (await session.execute(query)).all()]
