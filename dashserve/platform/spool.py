"""A JSON-lines file holding usage records the database could not take before shutdown.

Each line is one record with its ``record_id``; writing a record twice is harmless because the
store skips record ids it already has. ``claim`` moves everything spooled so far into one
``.replay`` file that stays until the writer has stored all of it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from dashserve.platform.gate import UsageRecord

logger = logging.getLogger(__name__)

Item = tuple[str, UsageRecord]  # (record_id, record)


def _encode(record_id: str, record: UsageRecord) -> str:
    data = asdict(record)
    data["created_at"] = record.created_at.isoformat()
    return json.dumps({"record_id": record_id, "record": data}, ensure_ascii=False)


def _decode(line: str) -> Item:
    data = json.loads(line)
    fields = data["record"]
    fields["created_at"] = datetime.fromisoformat(fields["created_at"])
    return data["record_id"], UsageRecord(**fields)


def append(path: Path, items: Iterable[Item]) -> int:
    """Append items and fsync; returns how many were written."""
    lines = [_encode(rid, rec) + "\n" for rid, rec in items]
    if not lines:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    return len(lines)


def _read(path: Path) -> list[Item]:
    items: list[Item] = []
    if not path.exists():
        return items
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(_decode(line))
        except (ValueError, KeyError, TypeError) as exc:  # a torn last line after a crash
            logger.error("skipping unreadable usage spool line %s:%d: %s", path, number, exc)
    return items


def replay_path(path: Path) -> Path:
    return path.with_name(path.name + ".replay")


def claim(path: Path) -> list[Item]:
    """Everything spooled (new and from an unfinished replay), deduplicated, now in ``.replay``."""
    replay = replay_path(path)
    merged: dict[str, UsageRecord] = {}
    for rid, rec in _read(replay) + _read(path):
        merged.setdefault(rid, rec)
    if not merged:
        replay.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return []
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    append(tmp, merged.items())
    os.replace(tmp, replay)
    path.unlink(missing_ok=True)
    return list(merged.items())


def release(path: Path) -> None:
    """Forget the replay file once every record in it is stored."""
    replay_path(path).unlink(missing_ok=True)
