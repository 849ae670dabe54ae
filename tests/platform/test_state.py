"""platform.state: building the platform, first-start key, settings from the server settings."""

from __future__ import annotations

from pathlib import Path

from dashserve.config import Settings
from dashserve.platform.limits import InProcessLimiter, LimitPolicy
from dashserve.platform.redis_limits import RedisLimiter
from dashserve.platform.state import (
    PlatformSettings,
    prepare_platform,
)
from tests.utils.platform import build_platform


async def test_first_start_creates_one_admin_key(tmp_path: Path) -> None:
    platform = await build_platform(PlatformSettings(data_dir=tmp_path))
    try:
        secret = platform.bootstrap_secret
        assert secret is not None and secret.startswith("sk-")
        assert (await platform.gate.authenticate_admin(secret)).is_admin
        assert (tmp_path / "dashserve.db").exists()
        assert isinstance(platform.limiter, InProcessLimiter)
    finally:
        await platform.close()
    again = await build_platform(PlatformSettings(data_dir=tmp_path))
    try:
        assert again.bootstrap_secret is None  # keys exist now
        assert len(await again.keys.list_keys()) == 1
    finally:
        await again.close()


async def test_static_keys_mean_no_bootstrap(tmp_path: Path) -> None:
    platform = await build_platform(PlatformSettings(data_dir=tmp_path, static_keys=("s",)))
    try:
        assert platform.bootstrap_secret is None
        assert (await platform.gate.authenticate("s", None, "m")).key_id is None
    finally:
        await platform.close()


async def test_close_drains_usage_and_engine_stats_bind(tmp_path: Path) -> None:
    from dashserve.contracts.outputs import EngineStats

    platform = await build_platform(PlatformSettings(data_dir=tmp_path, static_keys=("s",)))
    stats = EngineStats(num_waiting=2, num_running=1, num_kv_blocks_total=4, num_kv_blocks_free=1)
    platform.bind_engine_stats(lambda: stats)
    assert b"dashserve_queue_depth 2.0" in platform.metrics.render()[0]
    assert platform.writer._config.spool_path == tmp_path / "usage-spool.jsonl"
    await platform.close()


def test_server_settings_map_onto_the_platform(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, api_keys=("a", "b"), admin_keys=("z",), api_key_rpm=9,
                 api_key_max_concurrency=3, redis_url="redis://127.0.0.1:6379/0",
                 database_url="sqlite:///x", usage_flush_s=0.05).platform_settings()
    assert s.data_dir == tmp_path and s.static_keys == ("a", "b") and s.admin_keys == ("z",)
    assert s.static_limits == LimitPolicy(rpm=9, max_concurrency=3)
    assert s.redis_url == "redis://127.0.0.1:6379/0" and s.database_url == "sqlite:///x"
    assert s.writer.flush_interval_s == 0.05
    default = Settings(data_dir=tmp_path).platform_settings()
    assert default.static_limits.is_unlimited and default.writer.flush_interval_s == 0.5


async def test_prepare_does_no_io_until_the_gate_starts(tmp_path: Path) -> None:
    shown: list[str] = []
    platform = prepare_platform(PlatformSettings(data_dir=tmp_path), on_bootstrap_key=shown.append)
    assert not (tmp_path / "dashserve.db").exists() and shown == []
    await platform.gate.start()  # what the app's lifespan does
    await platform.gate.start()  # idempotent
    assert len(shown) == 1 and shown[0] == platform.bootstrap_secret
    assert (await platform.gate.authenticate(shown[0], None, "m")).is_admin
    await platform.gate.stop()
    await platform.close()  # idempotent too


async def test_redis_url_selects_the_shared_limiter(tmp_path: Path, redis_url: str) -> None:
    platform = await build_platform(
        PlatformSettings(data_dir=tmp_path, redis_url=redis_url, static_keys=("s",))
    )
    try:
        assert isinstance(platform.limiter, RedisLimiter)
    finally:
        await platform.close()
