"""Parses the times users type: ``30d``, ``12h``, ``90m``, ``2026-12-31`` or an ISO datetime."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from dashserve.errors import InvalidRequest

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(
    text: str, *, future: bool, now: datetime | None = None, param: str = "time"
) -> datetime:
    """An aware UTC datetime. Durations count forward (``future``) or back from ``now``.

    A bare date means midnight UTC of that day.
    """
    now = now or datetime.now(timezone.utc)
    match = _RELATIVE.match(text)
    if match:
        delta = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2).lower()])
        return now + delta if future else now - delta
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            day = date.fromisoformat(text.strip())
            return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(
            f"cannot read '{text}' as a time: use 30d, 12h, 2026-12-31 or an ISO datetime",
            param=param,
        ) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def start_of_day(value: datetime) -> datetime:
    return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
