"""The embedded search provider: documents in an SQLite FTS5 index in the data dir.

Documents come from the admin API (``/admin/v1/search/documents``) or from a directory of
``.txt``/``.md``/``.html`` files loaded at start-up (``search.index_dir``). Ranking is
FTS5's BM25; a query is split into words, each quoted, and any word may match, so
natural-language questions find documents sharing some of their words.
"""

from __future__ import annotations

import asyncio
import builtins
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dashserve.search.results import SearchResult, clip

SNIPPET_CHARS = 600
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".rst")
_WORD = re.compile(r"\w+", re.UNICODE)
_TAGS = re.compile(r"<[^>]+>")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, url TEXT NOT NULL, site_name TEXT NOT NULL,
    content TEXT NOT NULL, source TEXT NOT NULL DEFAULT 'api');
CREATE VIRTUAL TABLE IF NOT EXISTS documents_fts USING fts5(
    title, content, content='documents', content_rowid='rowid', tokenize='trigram');
CREATE TRIGGER IF NOT EXISTS documents_ai AFTER INSERT ON documents BEGIN
    INSERT INTO documents_fts(rowid, title, content) VALUES (new.rowid, new.title, new.content);
END;
CREATE TRIGGER IF NOT EXISTS documents_ad AFTER DELETE ON documents BEGIN
    INSERT INTO documents_fts(documents_fts, rowid, title, content)
    VALUES ('delete', old.rowid, old.title, old.content);
END;
"""


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str
    url: str
    site_name: str
    content: str
    source: str = "api"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "url": self.url,
                "site_name": self.site_name, "content": self.content, "source": self.source}


def match_expression(query: str) -> str | None:
    """An FTS5 query where any word of ``query`` may match (None: no usable word).

    The trigram tokenizer needs three characters, so shorter words are dropped; Chinese
    text is cut into overlapping three-character pieces.
    """
    terms: list[str] = []
    for word in _WORD.findall(query.lower()):
        if len(word) < 3:
            continue
        if all(ord(c) > 0x2e80 for c in word):  # CJK runs have no spaces: use trigrams
            terms.extend(word[i:i + 3] for i in range(len(word) - 2))
        else:
            terms.append(word)
    unique = list(dict.fromkeys(terms))[:32]
    if not unique:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in unique)


class LocalIndex:
    """The index (one SQLite file). Thread-safe; async methods run it off the event loop."""

    name = "local"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._lock = threading.Lock()
        with self._tx() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    # ---- documents --------------------------------------------------------------------------

    def add(self, title: str, url: str, content: str, *, site_name: str = "",
            source: str = "api", doc_id: str | None = None) -> Document:
        doc = Document(doc_id or uuid.uuid4().hex, title, url, site_name, content, source)
        with self._tx() as db:
            db.execute("DELETE FROM documents WHERE id = ?", (doc.id,))
            db.execute("INSERT INTO documents (id, title, url, site_name, content, source) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (doc.id, doc.title, doc.url, doc.site_name, doc.content, doc.source))
        return doc

    def delete(self, doc_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM documents WHERE id = ?", (doc_id,)).rowcount > 0

    def get(self, doc_id: str) -> Document | None:
        with self._lock:
            row = self._db.execute("SELECT id, title, url, site_name, content, source "
                                   "FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return Document(*row) if row else None

    def list(self, *, limit: int = 100, offset: int = 0) -> tuple[list[Document], int]:
        with self._lock:
            total = self._db.execute("SELECT count(*) FROM documents").fetchone()[0]
            rows = self._db.execute(
                "SELECT id, title, url, site_name, content, source FROM documents "
                "ORDER BY rowid LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        return [Document(*r) for r in rows], int(total)

    def load_directory(self, directory: Path) -> int:
        """Index every text file under ``directory`` (again on each start: ids are paths).

        The title is the first non-empty line (Markdown ``#`` removed), the URL a
        ``file://`` URL of the file.
        """
        count = 0
        for path in sorted(directory.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in TEXT_SUFFIXES:
                continue
            text = path.read_text("utf-8", errors="replace")
            if path.suffix.lower() in (".html", ".htm"):
                text = _TAGS.sub(" ", text)
            first = next((line.strip() for line in text.splitlines() if line.strip()), "")
            title = first.lstrip("#").strip()[:200] or path.stem
            rel = path.relative_to(directory).as_posix()
            self.add(title, path.resolve().as_uri(), text, site_name=directory.name,
                     source="directory", doc_id=f"dir:{rel}")
            count += 1
        return count

    # ---- search -----------------------------------------------------------------------------

    def search_sync(self, query: str, k: int) -> builtins.list[SearchResult]:
        expression = match_expression(query)
        if expression is None:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT d.title, d.url, d.site_name, d.content FROM documents_fts f "
                "JOIN documents d ON d.rowid = f.rowid WHERE documents_fts MATCH ? "
                "ORDER BY bm25(documents_fts, 2.0, 1.0) LIMIT ?", (expression, k)).fetchall()
        return [SearchResult(title, url, clip(content, SNIPPET_CHARS), site_name)
                for title, url, site_name, content in rows]

    async def search(self, query: str, k: int) -> builtins.list[SearchResult]:
        return await asyncio.to_thread(self.search_sync, query, k)

    async def aclose(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            self._db.close()
