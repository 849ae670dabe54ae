"""The revocation mark: lets a server keep the keys it has checked without losing a revocation.

A key once issued changes in one way only: it is revoked (its expiry is a time, read on every
request). So a server may reuse a key it read from the store for as long as no key has been
revoked since. The mark says when that happened: a small file beside a SQLite database, which
every revocation rewrites (a new random token, swapped in atomically) after its transaction
commits, in whatever process it runs (the server's admin API, ``dashserve keys revoke``).

A server reads the mark before it reads a key from the store and files the key under it; a
later request reuses the key only while the mark reads the same. A revocation that commits
before a request reads the mark is therefore seen by that request: the revoked key fails on
its very next request, in every process, as when each request read the store. Without a mark
(not made yet, or removed because it could not be rewritten) every request reads the store.

Only SQLite has a mark, since every process sharing a SQLite file shares its directory. Other
stores (PostgreSQL, maybe on several machines) have none, and their keys are read from the
store on every request.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

SUFFIX = ".revoked"


class RevocationMark:
    """The mark of one store (``path`` None: the store has none; ``read`` is then None)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    @classmethod
    def for_url(cls, url: URL) -> RevocationMark:
        """The mark of the database at ``url``: beside its file for SQLite, else none."""
        database = url.database
        if url.get_backend_name() != "sqlite" or not database or database == ":memory:" \
                or database.startswith("file:"):
            return cls(None)
        return cls(Path(database).with_name(Path(database).name + SUFFIX))

    def read(self) -> str | None:
        """The current token; None without a mark, or when it cannot be read (keys are
        then read from the store on every request)."""
        if self.path is None:
            return None
        try:
            return self.path.read_text(encoding="ascii") or None
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read the revocation mark %s: %s", self.path, exc)
            return None

    def ensure(self) -> None:
        """Make the mark if there is none yet (a server starting); where it cannot be made,
        keys are read from the store on every request."""
        if self.path is not None and self.read() is None:
            try:
                self.bump()
            except OSError as exc:
                log.warning("no revocation mark (%s): every request reads its key from the "
                            "store", exc)

    def bump(self) -> None:
        """Record a revocation (call after it commits); OSError if the mark could be neither
        rewritten nor removed."""
        if self.path is None:
            return
        token = secrets.token_hex(16)
        tmp = self.path.with_name(f"{self.path.name}.{token}.tmp")
        try:
            tmp.write_text(token, encoding="ascii")
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            # without a mark, servers read every key from the store again
            log.error("cannot rewrite the revocation mark %s (%s): removing it", self.path, exc)
            self.path.unlink(missing_ok=True)
