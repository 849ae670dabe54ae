"""The ``[ray]`` settings and flags, the engine-serve command's guard, and the stand-in pool's
checks (no Ray needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dashserve import engine_serve_cmd
from dashserve.cli import build_parser
from dashserve.serve_cmd import settings_from_args
from dashserve.upstream.engine_member import engine_pool
from tests.utils.fake_engine import FakeEngine


def _serve_args(*argv: str) -> argparse.Namespace:
    return build_parser(["serve", *argv]).parse_args(["serve", *argv])


def test_ray_is_off_by_default() -> None:
    settings = settings_from_args(_serve_args())
    assert not settings.ray.enabled and settings.ray.replicas == 2 and settings.ray.address is None


def test_ray_flags_and_config_section(tmp_path: Path) -> None:
    settings = settings_from_args(_serve_args("--ray", "--replicas", "3"))
    assert settings.ray.enabled and settings.ray.replicas == 3
    config = tmp_path / "d.toml"
    config.write_text('[ray]\nreplicas = 4\naddress = "auto"\nnum_cpus_per_replica = 2\n')
    from_file = settings_from_args(_serve_args("--config", str(config), "--ray"))
    assert (from_file.ray.enabled, from_file.ray.replicas, from_file.ray.address,
            from_file.ray.num_cpus_per_replica) == (True, 4, "auto", 2.0)
    flagged = settings_from_args(_serve_args("--config", str(config), "--replicas", "1"))
    assert (flagged.ray.enabled, flagged.ray.replicas, flagged.ray.address) == (False, 1, "auto")
    config.write_text("[ray]\nreplicas = 0\n")
    with pytest.raises(ValueError, match="replicas"):
        settings_from_args(_serve_args("--config", str(config)))


def test_engine_serve_refuses_an_open_address_without_a_secret(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(engine_serve_cmd.SECRET_ENV, raising=False)
    args = build_parser(["engine-serve"]).parse_args(["engine-serve", "--host", "0.0.0.0"])
    assert engine_serve_cmd.run(args) == 2
    assert "--secret" in capsys.readouterr().err
    args = build_parser(["engine-serve"]).parse_args(["engine-serve", "--model", "/m"])
    assert (args.host, args.port) == ("127.0.0.1", engine_serve_cmd.DEFAULT_PORT)
    settings = engine_serve_cmd.settings_from_args(args)
    assert [s.model for s in settings.model_specs()] == ["/m"]


def test_pool_members_must_share_a_tokenizer() -> None:
    a, b = FakeEngine(), FakeEngine()
    a.tokenizer_id, b.tokenizer_id = "x", "y"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="tokenizers"):
        engine_pool("m", [a, b])
    with pytest.raises(ValueError):
        engine_pool("m", [])
    b.tokenizer_id = "x"  # type: ignore[attr-defined]
    pool = engine_pool("m", [a, b])
    assert pool.model_info == a.model_info
    assert pool.stats().num_kv_blocks_total == a.stats().num_kv_blocks_total * 2
