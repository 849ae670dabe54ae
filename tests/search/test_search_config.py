"""Search and inspection settings: flags, config file tables, and what they build."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import ValidationError

from dashserve.config import Settings
from dashserve.inspection.config import InspectionConfig, build_inspector
from dashserve.search.config import SearchConfig, build_search
from dashserve.search.local_index import LocalIndex
from dashserve.search.remote import HttpSearch, SearxngSearch
from dashserve.serve_cmd import add_arguments, settings_from_args


def test_flags(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--search-provider", "local", "--search-index", str(tmp_path),
                              "--search-provider", "searxng", "--searxng-url", "http://s:8"])
    search = settings_from_args(args).search
    assert search.providers == ("local", "searxng")
    assert search.index_dir == tmp_path and search.searxng_url == "http://s:8"
    assert settings_from_args(parser.parse_args([])).search.providers == ()


def test_config_file_tables(tmp_path: Path) -> None:
    path = tmp_path / "dashserve.toml"
    path.write_text('[search]\nproviders = ["http"]\n[search.http]\nurl = "https://api.x/s"\n'
                    'api_key = "k"\n[inspection]\nkeywords = ["forbidden"]\n')
    settings = Settings(config_file=path)
    assert settings.search.http is not None and settings.search.http.api_key == "k"
    assert settings.inspection.keywords == ("forbidden",)


@pytest.mark.parametrize("values", [
    {"providers": ["searxng"]},
    {"providers": ["http"]},
    {"providers": ["local", "local"]},
    {"providers": ["bing"]},
    {"index_dir": "/tmp"},
    {"providers": ["searxng"], "searxng_url": "http://s", "index_dir": "/tmp"},
])
def test_incomplete_search_settings(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SearchConfig(**values)  # type: ignore[arg-type]


def test_guard_needs_a_model() -> None:
    with pytest.raises(ValidationError):
        InspectionConfig(provider="guard")


async def test_build(tmp_path: Path) -> None:
    assert build_search(SearchConfig(), tmp_path) is None
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Alpha\nalpha text")
    backends = build_search(SearchConfig(
        providers=("local", "searxng", "http"), index_dir=docs, searxng_url="http://s",
        http={"url": "https://api.x/s"}), tmp_path)  # type: ignore[arg-type]
    assert backends is not None
    kinds = [type(p) for p in backends.providers]
    assert kinds == [LocalIndex, SearxngSearch, HttpSearch]
    assert backends.index is not None and backends.index.list()[1] == 1
    assert (tmp_path / "search-index.sqlite3").is_file()
    await backends.aclose()
    assert build_inspector(InspectionConfig(provider="none"), tmp_path) is None
    inspector = build_inspector(InspectionConfig(), tmp_path)
    assert inspector is not None
    assert not (tmp_path / "inspection-rules.sqlite3").exists()  # opened on first use
    assert not await inspector.blocked("x", None)
    assert (tmp_path / "inspection-rules.sqlite3").is_file()
