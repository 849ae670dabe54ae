"""The revocation mark: lets a server keep the keys it has checked without losing a revocation.

A key once issued changes in one way only: it is revoked (its expiry is a time, read on every
request). So a server may reuse a key it read from the store for as long as no key has been
revoked since. The mark says when that happened. A server reads the mark before it reads a key
from the store and files the key under it; a later request reuses the key only while the mark
reads the same. Without a mark (``read`` is None) every request reads the store.

- SQLite (``FileMark``): a small file beside the database, which every revocation rewrites (a
  new random token, swapped in atomically) after its transaction commits, in whatever process
  it runs (the server's admin API, ``dashserve keys revoke``). Every process sharing a SQLite
  file shares its directory, and reads the file before the store: a revoked key fails on its
  very next request, in every process, as when each request read the store.
- PostgreSQL (``NotifiedMark``): servers may be on several machines that share no file. Every
  revocation sends a notification on ``REVOCATION_CHANNEL`` inside its transaction, which the
  database delivers at commit to every server listening; each server holds one connection
  listening, and takes a new token for each notification. A revoked key therefore fails on
  the server that revoked it on its very next request, and on every other server once the
  notification has reached it: within a millisecond or so on a local network, where a server
  reading the store on every request would see it at once. While the listening connection is
  down, or its own probes do not come back (notifications lost on the way, as through a proxy
  pooling connections by transaction), the mark is None.
- A store with neither (``:memory:``) has ``NoMark``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import URL

from dashserve.store.repos import REVOCATION_CHANNEL

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger(__name__)

SUFFIX = ".revoked"


class Mark(Protocol):
    def read(self) -> str | None:
        """The current token; None when keys must be read from the store on every request."""

    def bump(self) -> None:
        """Record a revocation (call after it commits)."""

    async def start(self) -> None:
        """A server starting: make the mark, or begin listening for revocations."""

    async def stop(self) -> None: ...


def mark_for(url: URL) -> Mark:
    """The mark of the database at ``url``."""
    database = url.database
    if url.get_backend_name() == "postgresql":
        return NotifiedMark(url)
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return NoMark()
    return FileMark(Path(database).with_name(Path(database).name + SUFFIX))


class NoMark:
    """A store without a mark: every request reads its key from the store."""

    def read(self) -> str | None:
        return None

    def bump(self) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class FileMark:
    """The mark of a SQLite database: a file beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        """The current token; None without a file, or when it cannot be read."""
        try:
            return self.path.read_text(encoding="ascii") or None
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read the revocation mark %s: %s", self.path, exc)
            return None

    async def start(self) -> None:
        """Make the mark if there is none yet; where it cannot be made, keys are read from
        the store on every request."""
        if self.read() is None:
            try:
                self.bump()
            except OSError as exc:
                log.warning("no revocation mark (%s): every request reads its key from the "
                            "store", exc)

    async def stop(self) -> None:
        pass

    def bump(self) -> None:
        """Record a revocation (call after it commits); OSError if the mark could be neither
        rewritten nor removed."""
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


PROBE = "probe:"  # the payload's start of a listener's own notification, not a revocation


class NotificationsLost(RuntimeError):
    """Notifications sent do not reach the listening connection."""


class NotifiedMark:
    """The mark of a PostgreSQL database: a token renewed by each revocation's notification,
    kept by one listening connection (psycopg, whatever driver the store itself uses).

    Notifications can be lost on the way without an error: through a proxy that pools
    server connections by transaction or statement (PgBouncer's usual modes), the connection
    that asked to listen is not the one notified. So the listener sends itself a notification
    (a probe) every ``check_s`` and keeps the mark only while each comes back within
    ``probe_s``; the first one must come back before any key is reused."""

    def __init__(self, url: URL, *, retry_s: float = 1.0, check_s: float = 10.0,
                 probe_s: float = 2.0) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._retry_s = retry_s
        self._check_s = check_s
        self._probe_s = probe_s
        self._token: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while notifications are known to arrive
        self.backend_pid: int | None = None  # the listening connection's server process

    def read(self) -> str | None:
        return self._token

    def bump(self) -> None:
        """A revocation made by this process (its own transaction sent the notification to the
        others): renewed at once, so this server refuses the key on its very next request."""
        if self._token is not None:
            self._token = secrets.token_hex(16)

    async def start(self, wait_s: float = 3.0) -> None:
        """Begin listening; waits up to ``wait_s`` for the first probe to come back (until
        then, and whenever notifications may be missed, keys are read from the store)."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="revocation-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), wait_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _down(self) -> None:
        self._token = None  # nothing is reused while revocations may go unheard
        self.listening.clear()

    def _listen_sql(self) -> str:
        return f"LISTEN {REVOCATION_CHANNEL}"

    async def _listen(self) -> None:
        import psycopg

        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, connect_timeout=3,
                        application_name="dashserve revocations") as conn:
                    await conn.execute(self._listen_sql())
                    self.backend_pid = conn.info.backend_pid
                    await self._probe(conn)
                    # keys filed under an earlier token may have been revoked unheard
                    self._token = secrets.token_hex(16)
                    self.listening.set()
                    if failures:
                        log.info("listening for key revocations again")
                    failures = 0
                    while True:
                        await self._wait(conn, None, self._check_s)
                        await self._probe(conn)
            except asyncio.CancelledError:
                self._down()
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: read the store, retry
                self._down()
                failures += 1
                (log.error if failures == 1 else log.debug)(
                    "not listening for key revocations (every request reads its key from the "
                    "store until this is back): %s", exc)
                await asyncio.sleep(min(30.0, self._retry_s * failures))

    async def _probe(self, conn: AsyncConnection[Any]) -> None:
        """Send a probe and see it come back, or raise ``NotificationsLost``."""
        probe = PROBE + secrets.token_hex(8)
        await conn.execute(f"NOTIFY {REVOCATION_CHANNEL}, '{probe}'")
        if not await self._wait(conn, probe, self._probe_s):
            raise NotificationsLost(
                f"a notification sent on {REVOCATION_CHANNEL} did not come back within "
                f"{self._probe_s:g} s; through a proxy pooling connections by transaction or "
                "statement, point the server at the database directly or a session pool")

    async def _wait(self, conn: AsyncConnection[Any], probe: str | None,
                    timeout_s: float) -> bool:
        """Follow the notifications for ``timeout_s``, renewing the token on each revocation
        (other servers' probes are not revocations); True as soon as ``probe`` comes back."""
        async with contextlib.aclosing(conn.notifies(timeout=timeout_s)) as notes:
            async for note in notes:
                if probe is not None and note.payload == probe:
                    return True
                if not note.payload.startswith(PROBE) and self._token is not None:
                    self._token = secrets.token_hex(16)
        return False
