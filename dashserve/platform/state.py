"""Builds one server's platform (store, limiter, usage writer, metrics, gate) and closes it."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from dashserve.contracts.outputs import EngineStats
from dashserve.platform.db_gate import DbGate, GateConfig
from dashserve.platform.keys import KeyManager, KeySpec
from dashserve.platform.limits import InProcessLimiter, Limiter, LimitPolicy
from dashserve.platform.metering import UsageWriter, WriterConfig
from dashserve.platform.metrics import PlatformMetrics
from dashserve.store.db import (
    Store,
    create_engine,
    default_data_dir,
    open_store,
    redact_url,
    resolve_database_url,
    upgrade_engine,
)

logger = logging.getLogger(__name__)

SPOOL_FILENAME = "usage-spool.jsonl"


@dataclass(frozen=True, slots=True)
class PlatformSettings:
    """What the platform needs (``Settings.platform_settings()`` for the server, the store
    flags for the ``keys`` and ``usage`` commands); None picks the documented default."""

    data_dir: Path | None = None  # --data-dir / DASHSERVE_DATA_DIR / ~/.local/share/dashserve
    database_url: str | None = None  # --database-url / DASHSERVE_DATABASE_URL / SQLite in data dir
    redis_url: str | None = None  # shared rate limits across processes
    static_keys: tuple[str, ...] = ()  # --api-key values: always valid, no database row
    admin_keys: tuple[str, ...] = ()  # --admin-key values: may use the admin API
    static_limits: LimitPolicy = field(default_factory=LimitPolicy)
    bootstrap_key: bool = True  # create and report an admin key on a first start with no keys
    writer: WriterConfig = field(default_factory=WriterConfig)


@dataclass(slots=True)
class PlatformState:
    """Everything the admin and metrics routes reach through ``app.state.platform``.

    ``gate.start()`` migrates the database, creates the first key if there is none, and starts
    the usage writer; ``gate.stop()`` drains the writer and closes the database. The app's
    lifespan already calls both, so passing ``gate`` to ``create_app`` is all it takes.
    """

    settings: PlatformSettings
    data_dir: Path
    store: Store
    gate: DbGate
    writer: UsageWriter
    limiter: Limiter
    metrics: PlatformMetrics
    on_bootstrap_key: Callable[[str], None] | None = None
    bootstrap_secret: str | None = None  # a key created at this start: show it once, then drop it

    @property
    def keys(self) -> KeyManager:
        return self.gate.keys

    def bind_engine_stats(self, stats: Callable[[], EngineStats | None]) -> None:
        """Let /metrics read the engines' queue and KV cache state."""
        self.metrics.bind_engine_stats(stats)

    async def open(self) -> None:
        await self.gate.start()

    async def close(self) -> None:
        """Drain the usage writer, release the limiter, close the database."""
        await self.gate.stop()

    async def _on_start(self) -> None:
        await upgrade_engine(self.store.engine)
        settings = self.settings
        if settings.bootstrap_key and not settings.static_keys and await self.keys.count() == 0:
            issued = await self.keys.create(KeySpec(name="bootstrap", is_admin=True))
            self.bootstrap_secret = issued.secret
            logger.warning("no API keys existed: created admin key %s", issued.key.prefix)
            if self.on_bootstrap_key is not None:
                self.on_bootstrap_key(issued.secret)

    async def _on_stop(self) -> None:
        await self.store.close()


def _make_limiter(redis_url: str | None) -> Limiter:
    if redis_url:
        from dashserve.platform.redis_limits import RedisLimiter

        return RedisLimiter.from_url(redis_url)
    return InProcessLimiter()


def prepare_platform(settings: PlatformSettings, *,
                     on_bootstrap_key: Callable[[str], None] | None = None) -> PlatformState:
    """Create store, limiter, writer, metrics and gate without any I/O (beyond the data dir).

    Nothing touches the database until ``gate.start()``. ``on_bootstrap_key`` receives the
    secret of a key created on a first start with no keys and no static keys (print it once;
    it is never logged).
    """
    data_dir = settings.data_dir or default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    url = resolve_database_url(settings.database_url, data_dir)
    logger.info("platform store: %s", redact_url(url))
    store = Store(create_engine(url))
    metrics = PlatformMetrics()
    writer_config = settings.writer
    if writer_config.spool_path is None:
        writer_config = replace(writer_config, spool_path=data_dir / SPOOL_FILENAME)
    writer = UsageWriter(store, writer_config)
    limiter = _make_limiter(settings.redis_url)

    async def on_start() -> None:
        await state._on_start()

    async def on_stop() -> None:
        await state._on_stop()

    gate = DbGate(
        store, limiter=limiter, writer=writer, metrics=metrics,
        config=GateConfig(
            static_keys=settings.static_keys, admin_keys=settings.admin_keys,
            static_limits=settings.static_limits,
        ),
        hooks=(on_start, on_stop),
    )
    metrics.bind_writer(writer)
    state = PlatformState(
        settings, data_dir, store, gate, writer, limiter, metrics, on_bootstrap_key
    )
    return state


def add_store_arguments(parser: argparse.ArgumentParser, *, on_subcommand: bool = False) -> None:
    """``--data-dir`` and ``--database-url``, shared by serve, keys and usage.

    ``on_subcommand`` repeats them on a nested subcommand without overwriting the parent's value.
    """
    default = argparse.SUPPRESS if on_subcommand else None
    parser.add_argument(
        "--data-dir", default=default,
        help="Directory for the SQLite database and the usage spool "
        "(default: $DASHSERVE_DATA_DIR or ~/.local/share/dashserve).",
    )
    parser.add_argument(
        "--database-url", default=default,
        help="Database URL, e.g. postgresql://user@host/db (default: $DASHSERVE_DATABASE_URL "
        "or SQLite in the data dir).",
    )


def add_platform_arguments(parser: argparse.ArgumentParser) -> None:
    """``--database-url``, ``--redis-url`` and ``--admin-key`` for ``serve`` (which has its own
    ``--data-dir`` and ``--api-key``)."""
    parser.add_argument(
        "--database-url", default=None,
        help="Database URL, e.g. postgresql://user@host/db (default: $DASHSERVE_DATABASE_URL "
        "or SQLite in the data dir).",
    )
    parser.add_argument(
        "--redis-url", default=None,
        help="Redis URL for rate limits shared by several server processes.",
    )
    parser.add_argument(
        "--admin-key", action="append", dest="admin_keys", default=None,
        help="A key allowed to use the admin API (repeatable).",
    )


async def open_cli_store(args: argparse.Namespace) -> Store:
    """The store named by ``--data-dir``/``--database-url``, migrated to the latest schema."""
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    return await open_store(resolve_database_url(args.database_url, data_dir))

