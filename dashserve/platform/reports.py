"""Usage reports: totals grouped by day, model, key or workspace, mostly from the daily roll-up.

Whole days come from ``usage_daily``; when ``since`` falls inside a day, the rest of that day
is summed from ``usage_records`` and merged in, so reports are exact and stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from dashserve.errors import InvalidRequest
from dashserve.platform.keys import KeyManager
from dashserve.platform.metering import daily_rows
from dashserve.platform.timespec import start_of_day
from dashserve.store import repos
from dashserve.store.db import Store

COUNTS = ("num_requests", "num_errors", *repos.USAGE_SUMS)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Filters and grouping for a report; ``key`` is a key id (or a static key's name)."""

    by: str = "day"
    since: datetime | None = None
    key: str | None = None
    model: str | None = None
    workspace: str | None = None

    def __post_init__(self) -> None:
        if self.by not in repos.GROUPINGS:
            raise InvalidRequest(f"'by' must be one of {', '.join(repos.GROUPINGS)}", param="by")


def _group_of(row: dict[str, Any], by: str) -> tuple[Any, ...]:
    if by == "key":
        return (row["key_id"], row["key_prefix"])
    return (row[by],)


def _group_fields(by: str) -> tuple[str, ...]:
    return ("key_id", "key_prefix") if by == "key" else (by,)


async def resolve_key_ref(store: Store, key: str | None) -> str | None:
    """A key id for a key given by id, prefix or secret; static key names pass through."""
    if key is None or key.startswith("static-"):
        return key
    return (await KeyManager(store).resolve(key)).id


async def usage_report(store: Store, query: UsageQuery) -> list[dict[str, Any]]:
    """One dict per group: the group fields, request/error counts, token sums, total_tokens."""
    since_day = None
    partial: list[dict[str, Any]] = []
    async with store.transaction() as session:
        if query.since is not None:
            first_full = start_of_day(query.since)
            if first_full < query.since:
                first_full += timedelta(days=1)
                records = await repos.select_records(
                    session, since=query.since, until=first_full, key_id=query.key,
                    model=query.model, workspace=query.workspace,
                )
                partial = daily_rows(records)
            since_day = first_full.date()
        full = await repos.sum_daily(
            session, by=query.by, since_day=since_day, key_id=query.key, model=query.model,
            workspace=query.workspace,
        )
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in [*full, *partial]:
        group = _group_of(row, query.by)
        fields = dict(zip(_group_fields(query.by), group, strict=True))
        total = merged.setdefault(group, {**fields, **{c: 0 for c in COUNTS}})
        for name in COUNTS:
            total[name] += int(row[name] or 0)
    result = [merged[g] for g in sorted(merged, key=lambda g: tuple(str(x) for x in g))]
    for row in result:
        row["total_tokens"] = row["input_tokens"] + row["output_tokens"]
        if "day" in row:
            row["day"] = row["day"].isoformat()
    return result


async def recent_records(
    store: Store, *, limit: int = 100, key: str | None = None, model: str | None = None,
    workspace: str | None = None, since: datetime | None = None,
) -> list[dict[str, Any]]:
    """The newest usage records, newest first, with datetimes as ISO strings."""
    async with store.transaction() as session:
        rows = await repos.select_records(
            session, since=since, key_id=key, model=model, workspace=workspace, limit=limit,
            newest_first=True,
        )
    for row in rows:
        row.pop("id", None)
        row["created_at"] = row["created_at"].astimezone(timezone.utc).isoformat()
    return rows
