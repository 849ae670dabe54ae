"""Platform fixtures: an injectable store outage (the stores and Redis: tests/utils/databases)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from dashserve.store.db import Store


class FlakyStore:
    """A Store whose transactions fail while ``down`` (a database outage, injected)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = False
        self.fail_after_commit = 0  # commits that succeed but report failure (lost acks)
        self.attempts = 0

    @property
    def engine(self):  # noqa: ANN201
        return self.inner.engine

    @property
    def dialect(self) -> str:
        return self.inner.dialect

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[object]:
        self.attempts += 1
        if self.down:
            raise OperationalError("BEGIN", {}, ConnectionRefusedError("database is down"))
        async with self.inner.transaction() as session:
            yield session
        if self.fail_after_commit > 0:
            self.fail_after_commit -= 1
            raise OperationalError("COMMIT", {}, ConnectionResetError("connection lost"))

    async def read(self, query: Any) -> Any:
        self.attempts += 1
        if self.down:
            raise OperationalError("SELECT", {}, ConnectionRefusedError("database is down"))
        return await self.inner.read(query)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
def flaky(store: Store) -> FlakyStore:
    return FlakyStore(store)

