"""Keys read from the store are reused until a revocation anywhere (the revocation mark): a
file beside SQLite, notifications from PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from dashserve.errors import AuthenticationFailed
from dashserve.platform import db_gate
from dashserve.platform.db_gate import DbGate
from dashserve.platform.keys import KeyManager, KeySpec
from dashserve.platform.revocations import FileMark, NoMark, NotifiedMark, mark_for
from dashserve.store import repos
from dashserve.store.db import Store, open_store
from tests.platform.test_db_gate import build_gate
from tests.utils.databases import pg_schema_url
from tests.utils.waiting import until


class Reads:
    """Counts the key store reads of ``manager``."""

    def __init__(self, manager: KeyManager) -> None:
        self.count = 0
        inner = manager.lookup

        async def counted(secret: str) -> Any:
            self.count += 1
            return await inner(secret)

        manager.lookup = counted  # type: ignore[method-assign]


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(f"sqlite:///{tmp_path / 'dashserve.db'}")
    yield store
    await store.close()


async def store_reads(gate: DbGate, secret: str, requests: int = 3) -> int:
    """How many of ``requests`` requests with ``secret`` read the key store."""
    reads = Reads(gate.keys)
    for _ in range(requests):
        await gate.authenticate(secret, None, "qwen")
    return reads.count


async def started(store: Store, **config: object) -> DbGate:
    gate = build_gate(store, **config)
    await gate.start()
    return gate


async def test_a_key_is_read_once_then_reused(sqlite_store: Store, tmp_path: Path) -> None:
    gate = await started(sqlite_store)
    try:
        assert isinstance(gate.keys.mark, FileMark)
        assert gate.keys.mark.path == tmp_path / "dashserve.db.revoked"
        assert gate.keys.mark.read()  # made at start
        issued = await gate.keys.create(KeySpec(rpm=1000))
        reads = Reads(gate.keys)
        for _ in range(5):
            principal = await gate.authenticate(issued.secret, None, "qwen")
            assert principal.key_id == issued.key.id
        assert reads.count == 1
        with pytest.raises(AuthenticationFailed):  # unknown secrets are never remembered
            await gate.authenticate("sk-not-a-key", None, "qwen")
        with pytest.raises(AuthenticationFailed):
            await gate.authenticate("sk-not-a-key", None, "qwen")
        assert reads.count == 3
    finally:
        await gate.stop()


async def test_expiry_is_checked_on_every_request(sqlite_store: Store,
                                                  monkeypatch: Any) -> None:
    gate = await started(sqlite_store)
    try:
        soon = datetime.now(timezone.utc) + timedelta(seconds=1)
        issued = await gate.keys.create(KeySpec(expires_at=soon))
        await gate.authenticate(issued.secret, None, "qwen")
        monkeypatch.setattr(db_gate, "now_utc", lambda: soon + timedelta(seconds=1))
        with pytest.raises(AuthenticationFailed):
            await gate.authenticate(issued.secret, None, "qwen")
    finally:
        await gate.stop()


@pytest.mark.parametrize("case", ["reuse time over", "no mark"])
async def test_every_request_reads_the_store(sqlite_store: Store, case: str) -> None:
    """Once ``key_reuse_s`` is over, or without a mark (e.g. removed because it could not be
    rewritten), the key is read from the store again."""
    gate = await started(sqlite_store, key_reuse_s=0.0 if case == "reuse time over" else 60.0)
    try:
        issued = await gate.keys.create(KeySpec())
        if case == "no mark":
            assert isinstance(gate.keys.mark, FileMark)
            gate.keys.mark.path.unlink()
        assert await store_reads(gate, issued.secret) == 3
    finally:
        await gate.stop()


def test_a_mark_that_cannot_be_rewritten_is_removed(tmp_path: Path, monkeypatch: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    mark = FileMark(tmp_path / "db.revoked")
    mark.bump()
    first = mark.read()
    assert first and len(first) == 32
    mark.bump()
    assert mark.read() not in (None, first)

    def refuse(*_: Any) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr("dashserve.platform.revocations.os.replace", refuse)
    with caplog.at_level(logging.ERROR):
        mark.bump()
    assert mark.read() is None and "removing it" in caplog.text
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_each_store_has_its_kind_of_mark(tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    file_mark = mark_for(make_url(f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    assert isinstance(file_mark, FileMark) and file_mark.path == tmp_path / "x.db.revoked"
    for url in ("postgresql+psycopg://u@127.0.0.1/test", "postgresql+asyncpg://u@127.0.0.1/t"):
        assert isinstance(mark_for(make_url(url)), NotifiedMark)
    for url in ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite://"):
        mark = mark_for(make_url(url))
        assert isinstance(mark, NoMark) and mark.read() is None
        mark.bump()  # nothing to do


# PostgreSQL: the mark is renewed by the notification each revocation sends at commit


@contextlib.asynccontextmanager
async def servers(url: str) -> AsyncIterator[tuple[DbGate, DbGate]]:
    """Two servers on one database."""
    stores = [await open_store(url), await open_store(url)]
    gates = [await started(store) for store in stores]
    try:
        yield gates[0], gates[1]
    finally:
        for gate in gates:
            await gate.stop()
        for store in stores:
            await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def two_servers(request: pytest.FixtureRequest, tmp_path: Path,
                      pg_available: bool) -> AsyncIterator[tuple[str, DbGate, DbGate]]:
    """(the store's kind, two servers on one database)."""
    if request.param == "postgresql" and not pg_available:
        pytest.skip("PostgreSQL is not running at 127.0.0.1:5432")
    place = (contextlib.nullcontext(f"sqlite:///{tmp_path / 'dashserve.db'}")
             if request.param == "sqlite" else pg_schema_url())
    with place as url:
        async with servers(url) as (gate, other):
            yield request.param, gate, other


async def test_a_revocation_on_another_server_is_seen(
        two_servers: tuple[str, DbGate, DbGate]) -> None:
    kind, gate, other = two_servers
    assert other.keys.mark.read() is not None
    revoked = await gate.keys.create(KeySpec())
    kept = await gate.keys.create(KeySpec())
    for secret in (revoked.secret, kept.secret):
        await gate.authenticate(secret, None, "qwen")
        await other.authenticate(secret, None, "qwen")
    reads = Reads(other.keys)
    for _ in range(3):
        await other.authenticate(kept.secret, None, "qwen")
        await other.authenticate(revoked.secret, None, "qwen")
    assert reads.count == 0  # reused
    before = other.keys.mark.read()
    await gate.keys.revoke(revoked.key.prefix)
    with pytest.raises(AuthenticationFailed):  # the server that revoked it: at once
        await gate.authenticate(revoked.secret, None, "qwen")
    if kind == "sqlite":  # the other server: at once beside SQLite
        assert other.keys.mark.read() != before
    else:  # once the notification has reached it
        await until(lambda: other.keys.mark.read() not in (None, before))
    with pytest.raises(AuthenticationFailed):
        await other.authenticate(revoked.secret, None, "qwen")
    await other.authenticate(kept.secret, None, "qwen")  # read again, still good
    assert reads.count == 2
    await other.authenticate(kept.secret, None, "qwen")
    assert reads.count == 2


async def test_postgres_this_servers_revocations_and_rolled_back_ones(pg_url: str) -> None:
    async with servers(pg_url) as (gate, other):
        mine = gate.keys.mark.read()
        gate.keys.mark.bump()  # what revoke does after its commit, before any notification
        assert gate.keys.mark.read() not in (None, mine)
        kept = await gate.keys.create(KeySpec())
        quiet = other.keys.mark.read()
        with pytest.raises(RuntimeError):
            async with gate.keys._store.transaction() as session:  # noqa: SLF001
                await repos.revoke_key(session, key_id=kept.key.id, at=datetime.now(timezone.utc))
                await repos.notify_revocation(session)
                raise RuntimeError("roll back")
        await asyncio.sleep(0.3)
        assert other.keys.mark.read() == quiet
        await other.authenticate(kept.secret, None, "qwen")


async def test_postgres_every_request_reads_the_store_while_not_listening(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The listening connection dropped (a database restart, a network cut): the mark is
    None until it listens again, with a new token (a revocation may have gone unheard)."""
    import psycopg

    store = await open_store(pg_url)
    gate = await started(store)
    mark = gate.keys.mark
    assert isinstance(mark, NotifiedMark)
    mark._retry_s = 0.3  # noqa: SLF001 - come back quickly
    try:
        issued = await gate.keys.create(KeySpec())
        assert await store_reads(gate, issued.secret) == 1
        before = mark.read()
        with caplog.at_level(logging.ERROR):
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as c:
                await c.execute("SELECT pg_terminate_backend(%s)", [mark.backend_pid])
            await until(lambda: mark.read() is None)
            assert await store_reads(gate, issued.secret) == 3
            assert "not listening for key revocations" in caplog.text
        await asyncio.wait_for(mark.listening.wait(), 10)
        assert mark.read() not in (None, before)
        assert await store_reads(gate, issued.secret) == 1  # read under the new token, reused
    finally:
        await gate.stop()
        await store.close()
    assert mark.read() is None and not mark.listening.is_set()


async def test_postgres_notifications_that_do_not_come_back_mean_no_reuse(
        pg_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: Any) -> None:
    """Through a proxy pooling connections by transaction, the connection that listens is not
    the one notified. Here it listens on another channel: the probe it sends itself never
    comes back, so no key is reused and the log says why."""
    monkeypatch.setattr(NotifiedMark, "_listen_sql", lambda self: "LISTEN elsewhere")
    store = await open_store(pg_url)
    gate = build_gate(store)
    mark = gate.keys.mark
    assert isinstance(mark, NotifiedMark)
    mark._probe_s = 0.2  # noqa: SLF001
    try:
        with caplog.at_level(logging.ERROR):
            await gate.start()
        assert mark.read() is None and not mark.listening.is_set()
        assert "did not come back within 0.2 s" in caplog.text
        mark.bump()
        assert mark.read() is None
        issued = await gate.keys.create(KeySpec())
        assert await store_reads(gate, issued.secret) == 3
    finally:
        await gate.stop()
        await store.close()


async def test_postgres_other_servers_probes_are_not_revocations(pg_url: str) -> None:
    store, other_store = await open_store(pg_url), await open_store(pg_url)
    gate = build_gate(store)
    assert isinstance(gate.keys.mark, NotifiedMark)
    gate.keys.mark._check_s = 0.02  # noqa: SLF001 - probes often
    await gate.start()
    other = await started(other_store)
    try:
        issued = await gate.keys.create(KeySpec())
        await other.authenticate(issued.secret, None, "qwen")
        reads = Reads(other.keys)
        for _ in range(10):
            await asyncio.sleep(0.05)
            await other.authenticate(issued.secret, None, "qwen")
        assert reads.count == 0
    finally:
        await other.stop()
        await gate.stop()
        await other_store.close()
        await store.close()
