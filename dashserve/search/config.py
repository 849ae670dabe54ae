"""Search settings (the ``search`` table of the config file) and the providers they build.

``providers`` lists the backends in order: the ``turbo`` strategy asks the first, ``max``
asks every one and merges their results. Without providers, ``enable_search`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dashserve.search.local_index import LocalIndex
from dashserve.search.remote import HttpSearch, SearxngSearch
from dashserve.search.results import SearchProvider

INDEX_FILENAME = "search-index.sqlite3"
ProviderName = Literal["local", "searxng", "http"]


class HttpSearchConfig(BaseModel):
    """A key-based search API (Tavily-like defaults: POST ``{"query", "max_results"}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)
    method: Literal["GET", "POST"] = "POST"
    api_key: str | None = None
    key_header: str = "Authorization"
    key_prefix: str = "Bearer "
    query_param: str = "query"
    count_param: str | None = "max_results"
    extra_params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    results_path: str = "results"
    title_field: str = "title"
    url_field: str = "url"
    snippet_field: str = "content"
    site_field: str = ""
    icon_field: str = ""
    timeout_s: float = Field(default=5.0, gt=0)
    max_bytes: int = Field(default=2 << 20, ge=1024)


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: tuple[ProviderName, ...] = ()
    index_path: Path | None = None  # the local index file (default: in the data dir)
    index_dir: Path | None = None  # a directory of documents indexed at start-up
    searxng_url: str | None = None
    http: HttpSearchConfig | None = None
    timeout_s: float = Field(default=5.0, gt=0)  # SearXNG's timeout
    max_bytes: int = Field(default=2 << 20, ge=1024)  # largest SearXNG reply read
    results_turbo: int = Field(default=5, ge=1, le=50)
    results_max: int = Field(default=10, ge=1, le=50)
    agent_rounds: int = Field(default=3, ge=1, le=10)
    decide_max_tokens: int = Field(default=128, ge=16, le=2048)
    # Read each result's page (through the SSRF-safe fetcher) instead of the snippet alone.
    fetch_pages: bool = False
    page_max_bytes: int = Field(default=2 << 20, ge=1024)  # largest page read
    page_max_chars: int = Field(default=4000, ge=100)  # page text the prompt gets, per result
    page_allow_loopback: bool = False  # tests only: let result pages on 127.0.0.1 be read

    @model_validator(mode="after")
    def _complete(self) -> SearchConfig:
        if len(set(self.providers)) != len(self.providers):
            raise ValueError("search.providers names a provider twice")
        if "searxng" in self.providers and not self.searxng_url:
            raise ValueError("search provider 'searxng' needs search.searxng_url")
        if "http" in self.providers and self.http is None:
            raise ValueError("search provider 'http' needs a [search.http] table")
        if self.index_dir is not None and "local" not in self.providers:
            raise ValueError("search.index_dir is indexed by the 'local' provider; add it to "
                             "search.providers (--search-provider local)")
        return self


@dataclass
class SearchBackends:
    """The configured providers, in order, and the local index if one is configured."""

    config: SearchConfig
    providers: list[SearchProvider]
    index: LocalIndex | None = None

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()
        if self.index is not None:
            self.index.close()


def build_search(config: SearchConfig, data_dir: Path) -> SearchBackends | None:
    """The backends ``config`` names (None: search is off). Loads ``index_dir`` once."""
    if not config.providers:
        return None
    providers: list[SearchProvider] = []
    index: LocalIndex | None = None
    for name in config.providers:
        if name == "local":
            index = LocalIndex(config.index_path or data_dir / INDEX_FILENAME)
            if config.index_dir is not None:
                index.load_directory(config.index_dir)
            providers.append(index)
        elif name == "searxng":
            assert config.searxng_url is not None
            providers.append(SearxngSearch(config.searxng_url, timeout_s=config.timeout_s,
                                           max_bytes=config.max_bytes))
        else:
            providers.append(HttpSearch(config.http))
    return SearchBackends(config, providers, index)
