"""Rule lists: keywords and regular expressions per workspace, in an SQLite file.

A rule belongs to one workspace, or to ``*`` (every workspace); a request is screened
against its workspace's rules and the ``*`` rules, plus the keywords and patterns of the
config file. Keywords match case-insensitively anywhere in the text; patterns are Python
regular expressions (``(?i)`` for case-insensitive). Each workspace's rules are compiled
into one expression, cached until the rules change.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from dashserve.errors import InvalidRequest

ALL_WORKSPACES = "*"
MAX_PATTERN_CHARS = 1000
RuleKind = Literal["keyword", "regex"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rules (
    id TEXT PRIMARY KEY, workspace TEXT NOT NULL, kind TEXT NOT NULL, pattern TEXT NOT NULL,
    created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rules_workspace ON rules (workspace);
"""


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    workspace: str
    kind: RuleKind
    pattern: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "workspace": self.workspace, "kind": self.kind,
                "pattern": self.pattern, "created_at": self.created_at}


def rule_expression(kind: str, pattern: str) -> str:
    """The regular expression of one rule (refuses bad patterns with 400)."""
    if not pattern or len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidRequest(f"pattern must have 1 to {MAX_PATTERN_CHARS} characters",
                             param="pattern")
    if kind == "keyword":
        return "(?i:" + re.escape(pattern) + ")"
    if kind != "regex":
        raise InvalidRequest("kind must be 'keyword' or 'regex'", param="kind")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InvalidRequest(f"pattern is not a valid regular expression: {exc}",
                             param="pattern") from None
    return "(?:" + pattern + ")"


def compile_rules(rules: Iterable[tuple[str, str]]) -> re.Pattern[str] | None:
    parts = [rule_expression(kind, pattern) for kind, pattern in rules]
    return re.compile("|".join(parts)) if parts else None


class RuleStore:
    """Rules in one SQLite file; the matcher of a workspace is cached until a change."""

    def __init__(self, path: Path | str, *, keywords: Iterable[str] = (),
                 patterns: Iterable[str] = ()) -> None:
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None  # opened on first use
        self._lock = threading.Lock()
        self._static = [("keyword", k) for k in keywords] + [("regex", p) for p in patterns]
        compile_rules(self._static)  # a bad configured pattern fails at start-up
        self._cache: dict[str, re.Pattern[str] | None] = {}

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False)
            with conn:
                conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def add(self, workspace: str, kind: str, pattern: str) -> Rule:
        rule_expression(kind, pattern)
        if not workspace:
            raise InvalidRequest("workspace must not be empty", param="workspace")
        rule = Rule(uuid.uuid4().hex, workspace, kind,  # type: ignore[arg-type]
                    pattern, datetime.now(timezone.utc).isoformat())
        with self._lock, self._db:
            self._db.execute("INSERT INTO rules VALUES (?, ?, ?, ?, ?)",
                             (rule.id, rule.workspace, rule.kind, rule.pattern,
                              rule.created_at))
            self._cache.clear()
        return rule

    def delete(self, rule_id: str) -> bool:
        with self._lock, self._db:
            gone = self._db.execute("DELETE FROM rules WHERE id = ?", (rule_id,)).rowcount > 0
            self._cache.clear()
        return gone

    def list(self, workspace: str | None = None) -> list[Rule]:
        sql = "SELECT id, workspace, kind, pattern, created_at FROM rules"
        args: tuple[str, ...] = ()
        if workspace is not None:
            sql += " WHERE workspace = ?"
            args = (workspace,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at, id", args).fetchall()
        return [Rule(*row) for row in rows]

    def matcher(self, workspace: str | None) -> re.Pattern[str] | None:
        """The compiled rules that apply in ``workspace`` (None: no rule)."""
        key = workspace or ""
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            rows = self._db.execute(
                "SELECT kind, pattern FROM rules WHERE workspace IN (?, ?) "
                "ORDER BY created_at, id", (ALL_WORKSPACES, key)).fetchall()
            matcher = compile_rules([*self._static, *rows])
            self._cache[key] = matcher
        return matcher

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class RuleInspector:
    """Screens text with the rules of the caller's workspace."""

    name = "rules"
    check_every_chars = 0  # every update

    def __init__(self, store: RuleStore) -> None:
        self.store = store

    async def blocked(self, text: str, workspace: str | None) -> bool:
        matcher = self.store.matcher(workspace)  # cached; a miss is one small query
        return matcher is not None and matcher.search(text) is not None

    async def aclose(self) -> None:
        self.store.close()
