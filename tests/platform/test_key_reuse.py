"""Keys read from the store are reused until a revocation anywhere (the revocation mark)."""

from __future__ import annotations

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
from dashserve.platform.revocations import RevocationMark
from dashserve.store.db import Store, open_store
from tests.platform.test_db_gate import build_gate


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


async def started(store: Store, **config: object) -> DbGate:
    gate = build_gate(store, **config)
    await gate.start()
    return gate


async def test_a_key_is_read_once_then_reused(sqlite_store: Store, tmp_path: Path) -> None:
    gate = await started(sqlite_store)
    try:
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


async def test_a_revocation_in_another_process_is_seen_on_the_next_request(
        sqlite_store: Store, tmp_path: Path) -> None:
    gate = await started(sqlite_store)
    other_store = await open_store(f"sqlite:///{tmp_path / 'dashserve.db'}")
    other = await started(other_store)  # a second server on the same database
    try:
        revoked = await gate.keys.create(KeySpec())
        kept = await gate.keys.create(KeySpec())
        for secret in (revoked.secret, kept.secret):
            await other.authenticate(secret, None, "qwen")
        reads = Reads(other.keys)
        await other.authenticate(kept.secret, None, "qwen")
        assert reads.count == 0  # reused
        await gate.keys.revoke(revoked.key.prefix)
        with pytest.raises(AuthenticationFailed):
            await other.authenticate(revoked.secret, None, "qwen")
        await other.authenticate(kept.secret, None, "qwen")  # read again, still good
        assert reads.count == 2
        await other.authenticate(kept.secret, None, "qwen")
        assert reads.count == 2
    finally:
        await other.stop()
        await other_store.close()
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
            assert gate.keys.mark.path is not None
            gate.keys.mark.path.unlink()
        reads = Reads(gate.keys)
        for _ in range(3):
            await gate.authenticate(issued.secret, None, "qwen")
        assert reads.count == 3
    finally:
        await gate.stop()


def test_a_mark_that_cannot_be_rewritten_is_removed(tmp_path: Path, monkeypatch: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    mark = RevocationMark(tmp_path / "db.revoked")
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


def test_only_sqlite_files_have_a_mark(tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    assert RevocationMark.for_url(make_url(f"sqlite+aiosqlite:///{tmp_path}/x.db")).path \
        == tmp_path / "x.db.revoked"
    for url in ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite://",
                "postgresql+asyncpg://u@127.0.0.1/test"):
        mark = RevocationMark.for_url(make_url(url))
        assert mark.path is None and mark.read() is None
        mark.bump()  # nothing to do
