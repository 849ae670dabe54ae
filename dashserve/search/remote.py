"""Search providers over HTTP: SearXNG's JSON API and a generic key-based search API.

Both read the reply with a byte cap and a timeout; anything unexpected (an HTTP error, a
reply that is not JSON, too big, or of the wrong shape) raises ``SearchFailed``, so the
caller decides whether the request goes on without search.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from dashserve.search.results import SearchFailed, SearchResult, clip

SNIPPET_CHARS = 600
USER_AGENT = "dashserve-search/1"


async def get_json(client: httpx.AsyncClient, method: str, url: str, *, max_bytes: int,
                   **kwargs: Any) -> Any:
    """The JSON reply of one request, read up to ``max_bytes``."""
    try:
        async with client.stream(method, url, **kwargs) as response:
            if response.status_code != 200:
                raise SearchFailed(f"{url} answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise SearchFailed(f"{url} answered more than {max_bytes} bytes")
    except httpx.TimeoutException as exc:
        raise SearchFailed(f"{url} timed out") from exc
    except httpx.HTTPError as exc:
        raise SearchFailed(f"{url} failed: {type(exc).__name__}") from exc
    try:
        return json.loads(bytes(body))
    except ValueError as exc:
        raise SearchFailed(f"{url} answered something that is not JSON") from exc


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dig(data: Any, path: str) -> Any:
    for part in (p for p in path.split(".") if p):
        data = data.get(part) if isinstance(data, Mapping) else None
    return data


def results_from(items: Any, *, title: str, url: str, snippet: str, k: int,
                 site_name: str = "", icon: str = "") -> list[SearchResult]:
    """Up to ``k`` results from a list of JSON objects, by field name; entries without a
    URL are skipped."""
    if not isinstance(items, list):
        raise SearchFailed("the search reply holds no result list")
    out: list[SearchResult] = []
    for item in items:
        if not isinstance(item, Mapping) or not _text(item.get(url)):
            continue
        out.append(SearchResult(
            title=clip(_text(item.get(title)), 300), url=_text(item.get(url))[:2048],
            snippet=clip(_text(item.get(snippet)), SNIPPET_CHARS),
            site_name=clip(_text(item.get(site_name)), 100) if site_name else "",
            icon=_text(item.get(icon))[:2048] if icon else ""))
        if len(out) >= k:
            break
    return out


class SearxngSearch:
    """SearXNG's ``/search?q=...&format=json`` (the instance must enable the json format)."""

    name = "searxng"

    def __init__(self, base_url: str, *, timeout_s: float = 5.0, max_bytes: int = 2 << 20,
                 language: str | None = None, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self.url = base_url.rstrip("/") + "/search"
        self.max_bytes = max_bytes
        self.language = language
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport,
                                         headers={"User-Agent": USER_AGENT,
                                                  "Accept": "application/json"})

    async def search(self, query: str, k: int) -> list[SearchResult]:
        params = {"q": query, "format": "json"}
        if self.language:
            params["language"] = self.language
        data = await get_json(self._client, "GET", self.url, params=params,
                              max_bytes=self.max_bytes)
        items = data.get("results") if isinstance(data, Mapping) else None
        return results_from(items, title="title", url="url", snippet="content", k=k)

    async def aclose(self) -> None:
        await self._client.aclose()


class HttpSearch:
    """A key-based search API, described by configuration (see ``HttpSearchConfig``).

    GET sends the query and count as query-string parameters, POST as a JSON body; the key
    goes in ``key_header`` (with ``key_prefix``, e.g. ``"Bearer "``). Results are the list at
    ``results_path`` (dotted), their fields named by ``title_field``/``url_field``/... .
    """

    name = "http"

    def __init__(self, config: Any, *, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self.config = config
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if config.api_key:
            headers[config.key_header] = config.key_prefix + config.api_key
        self._client = httpx.AsyncClient(timeout=config.timeout_s, transport=transport,
                                         headers=headers)

    async def search(self, query: str, k: int) -> list[SearchResult]:
        c = self.config
        values: dict[str, Any] = {c.query_param: query, **dict(c.extra_params)}
        if c.count_param:
            values[c.count_param] = k
        if c.method == "GET":
            data = await get_json(self._client, "GET", c.url, params=values,
                                  max_bytes=c.max_bytes)
        else:
            data = await get_json(self._client, "POST", c.url, json=values,
                                  max_bytes=c.max_bytes)
        return results_from(_dig(data, c.results_path), title=c.title_field, url=c.url_field,
                            snippet=c.snippet_field, site_name=c.site_field,
                            icon=c.icon_field, k=k)

    async def aclose(self) -> None:
        await self._client.aclose()
