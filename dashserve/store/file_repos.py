"""Keyword-only queries on the ``files`` table; every lookup is scoped to one workspace."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from dashserve.store.tables import files


@dataclass(frozen=True, slots=True)
class FileRow:
    """One row of ``files``."""

    id: str
    workspace: str
    filename: str
    purpose: str
    description: str | None
    bytes: int
    md5: str
    sha256: str
    format: str
    status: str
    status_details: str | None
    text_chars: int
    blob_key: str
    created_at: datetime


def _row(row: Any) -> FileRow:
    return FileRow(**dict(row._mapping))


async def lock_workspace(session: AsyncSession, *, workspace: str) -> None:
    """Serialise quota checks of one workspace across processes (PostgreSQL; SQLite
    transactions are serialised by the database itself)."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(b"dashserve-files:" + workspace.encode())
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


async def insert_file(session: AsyncSession, *, row: FileRow) -> None:
    values = {f: getattr(row, f) for f in FileRow.__slots__}
    await session.execute(files.insert().values(**values))


async def get_file(session: AsyncSession, *, workspace: str, file_id: str) -> FileRow | None:
    query = select(files).where(files.c.id == file_id, files.c.workspace == workspace)
    row = (await session.execute(query)).first()
    return _row(row) if row is not None else None


async def get_files(session: AsyncSession, *, workspace: str,
                    file_ids: list[str]) -> dict[str, FileRow]:
    query = select(files).where(files.c.id.in_(file_ids), files.c.workspace == workspace)
    return {r.id: r for r in (_row(x) for x in (await session.execute(query)).all())}


async def find_processed(session: AsyncSession, *, workspace: str,
                         sha256: str) -> FileRow | None:
    """A processed file of the workspace with the same bytes (its text can be reused)."""
    query = (select(files)
             .where(files.c.workspace == workspace, files.c.sha256 == sha256,
                    files.c.status == "processed")
             .order_by(files.c.created_at).limit(1))
    row = (await session.execute(query)).first()
    return _row(row) if row is not None else None


async def workspace_usage(session: AsyncSession, *, workspace: str) -> tuple[int, int]:
    """(number of files, total bytes) held by ``workspace``."""
    query = select(func.count(), func.coalesce(func.sum(files.c.bytes), 0)).where(
        files.c.workspace == workspace)
    count, total = (await session.execute(query)).one()
    return int(count), int(total)


async def list_files(session: AsyncSession, *, workspace: str, limit: int, offset: int = 0,
                     after: FileRow | None = None, descending: bool = True,
                     purpose: str | None = None) -> list[FileRow]:
    """Files of ``workspace`` ordered by creation (then id), starting after ``after``."""
    query = select(files).where(files.c.workspace == workspace)
    if purpose is not None:
        query = query.where(files.c.purpose == purpose)
    if after is not None:
        key = (files.c.created_at, files.c.id)
        if descending:
            query = query.where((key[0] < after.created_at)
                                | ((key[0] == after.created_at) & (key[1] < after.id)))
        else:
            query = query.where((key[0] > after.created_at)
                                | ((key[0] == after.created_at) & (key[1] > after.id)))
    if descending:
        query = query.order_by(files.c.created_at.desc(), files.c.id.desc())
    else:
        query = query.order_by(files.c.created_at, files.c.id)
    query = query.offset(offset).limit(limit)
    return [_row(r) for r in (await session.execute(query)).all()]


async def delete_file(session: AsyncSession, *, workspace: str, file_id: str) -> FileRow | None:
    """Remove the row; the deleted row, or None when the workspace has no such file."""
    row = await get_file(session, workspace=workspace, file_id=file_id)
    if row is not None:
        await session.execute(files.delete().where(files.c.id == file_id,
                                                   files.c.workspace == workspace))
    return row
