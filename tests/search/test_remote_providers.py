"""search.remote: SearXNG and the generic HTTP provider, against mock transports."""

from __future__ import annotations

import json

import httpx
import pytest

from dashserve.search.config import HttpSearchConfig
from dashserve.search.remote import HttpSearch, SearxngSearch
from dashserve.search.results import SearchFailed

SEARXNG_REPLY = {"query": "q", "results": [
    {"url": "https://a.example/1", "title": "First", "content": "first  text\nhere"},
    {"title": "no url"},
    "not an object",
    {"url": "https://b.example/2", "title": "Second", "content": "x" * 5000},
    {"url": "https://c.example/3", "title": "Third", "content": "third"},
]}


def searxng(handler: object, **kwargs: object) -> SearxngSearch:
    return SearxngSearch("http://searx.local/", transport=httpx.MockTransport(handler),
                         **kwargs)  # type: ignore[arg-type]


async def test_searxng_query_and_results() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=SEARXNG_REPLY)

    provider = searxng(handler)
    results = await provider.search("杭州 天气", 2)
    await provider.aclose()
    assert len(seen) == 1
    assert seen[0].url.path == "/search"
    assert seen[0].url.params["q"] == "杭州 天气" and seen[0].url.params["format"] == "json"
    assert [r.url for r in results] == ["https://a.example/1", "https://b.example/2"]
    assert results[0].snippet == "first text here" and results[0].site == "a.example"
    assert len(results[1].snippet) <= 601


@pytest.mark.parametrize("reply", [
    httpx.Response(500, text="oops"),
    httpx.Response(200, text="<html>not json</html>"),
    httpx.Response(200, json={"results": "nope"}),
    httpx.Response(200, json=["a"]),
])
async def test_searxng_bad_replies_fail_clearly(reply: httpx.Response) -> None:
    provider = searxng(lambda request: reply)
    with pytest.raises(SearchFailed):
        await provider.search("q", 5)


async def test_huge_replies_are_cut_off() -> None:
    huge = json.dumps({"results": [{"url": "https://x", "content": "y" * 100_000}]})
    provider = searxng(lambda request: httpx.Response(200, text=huge), max_bytes=10_000)
    with pytest.raises(SearchFailed, match="more than 10000 bytes"):
        await provider.search("q", 5)


async def test_timeouts_and_connection_errors_fail_clearly() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(SearchFailed, match="timed out"):
        await searxng(slow).search("q", 5)
    with pytest.raises(SearchFailed, match="ConnectError"):
        await searxng(refused).search("q", 5)


async def test_http_provider_post_with_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"results": [
            {"url": "https://t.example/a", "title": "A", "content": "alpha"}]})

    config = HttpSearchConfig(url="https://api.search.example/search", api_key="tvly-1",
                              extra_params={"search_depth": "basic"})
    provider = HttpSearch(config, transport=httpx.MockTransport(handler))
    results = await provider.search("alpha", 3)
    assert seen[0].method == "POST" and seen[0].headers["authorization"] == "Bearer tvly-1"
    assert json.loads(seen[0].content) == {"query": "alpha", "max_results": 3,
                                           "search_depth": "basic"}
    assert [(r.title, r.url, r.snippet) for r in results] == [("A", "https://t.example/a",
                                                                "alpha")]


async def test_http_provider_get_with_nested_results() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"web": {"results": [
            {"url": "https://b.example", "title": "B", "description": "beta",
             "profile": "Bee", "favicon": "https://b.example/f.ico"}]}})

    config = HttpSearchConfig(
        url="https://api.search.example/web", method="GET", api_key="k",
        key_header="X-Subscription-Token", key_prefix="", query_param="q",
        count_param="count", results_path="web.results", snippet_field="description",
        site_field="profile", icon_field="favicon")
    provider = HttpSearch(config, transport=httpx.MockTransport(handler))
    [result] = await provider.search("beta", 4)
    assert seen[0].headers["x-subscription-token"] == "k"
    assert seen[0].url.params["q"] == "beta" and seen[0].url.params["count"] == "4"
    assert (result.site, result.icon, result.snippet) == ("Bee", "https://b.example/f.ico",
                                                          "beta")
