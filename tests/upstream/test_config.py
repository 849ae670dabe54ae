"""``[[upstreams]]`` in the config file and ``serve --upstream`` flags become typed specs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dashserve.cli import build_parser
from dashserve.config import Settings
from dashserve.serve_cmd import settings_from_args
from dashserve.upstream.config import parse_upstream_flag

TOML = """
[[models]]
model = "/models/local"
served_model_names = ["qwen-turbo"]

[[upstreams]]
name = "qwen3-8b"
served_model_names = ["qwen-plus"]
kind = "vllm"
urls = ["http://gpu1:8000/", "http://gpu2:8000"]
tokenizer = "/models/Qwen3-8B"
upstream_model = "Qwen/Qwen3-8B"
load_factor = 1.5
"""


def test_config_file_pools(tmp_path: Path) -> None:
    path = tmp_path / "dashserve.toml"
    path.write_text(TOML)
    settings = Settings(config_file=path)
    (spec,) = settings.upstreams
    assert spec.names == ("qwen3-8b", "qwen-plus") and spec.kind == "vllm"
    assert spec.urls == ("http://gpu1:8000", "http://gpu2:8000")
    assert spec.load_factor == 1.5 and spec.upstream_model == "Qwen/Qwen3-8B"
    assert not settings.is_demo and [m.model for m in settings.model_specs()] == ["/models/local"]


def test_upstreams_alone_are_not_the_demo() -> None:
    settings = Settings(upstreams=[parse_upstream_flag("qwen-plus=llamacpp:http://127.0.0.1:1")])
    assert not settings.is_demo and settings.model_specs() == ()


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "tgi"}, "unknown upstream kind"),
    ({"kind": "dashserve", "tokenizer": "/tok"}, "engines' own tokenizer"),
    ({"urls": ["gpu1:8000"]}, "must start with http"),
    ({"urls": []}, "at least 1"),
])
def test_bad_pools_are_refused(fields: dict[str, object], message: str) -> None:
    spec = {"name": "x", "kind": "vllm", "urls": ["http://a:1"], **fields}
    with pytest.raises(ValidationError, match=message):
        Settings(upstreams=[spec])


def test_a_name_served_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="given to both"):
        Settings(models=[{"model": "/m", "served_model_names": ["qwen-plus"]}],
                 upstreams=[{"name": "qwen-plus", "kind": "vllm", "urls": ["http://a:1"]}])


def test_serve_flags() -> None:
    args = build_parser().parse_args([
        "serve", "--upstream", "qwen-plus=vllm:http://a:8000,http://b:8000",
        "--upstream", "qwen-max=llamacpp:http://c:8080", "--upstream-tokenizer", "/tok"])
    settings = settings_from_args(args)
    assert [(s.name, s.kind, s.urls, s.tokenizer) for s in settings.upstreams] == [
        ("qwen-plus", "vllm", ("http://a:8000", "http://b:8000"), "/tok"),
        ("qwen-max", "llamacpp", ("http://c:8080",), "/tok")]
    with pytest.raises(ValueError, match="NAME=KIND:URL"):
        parse_upstream_flag("qwen-plus")
    with pytest.raises(ValueError, match="unknown upstream kind 'http'"):
        parse_upstream_flag("qwen-plus=http://a:8000")
