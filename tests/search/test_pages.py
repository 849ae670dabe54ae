"""Result pages are read through the SSRF-safe fetcher; anything it refuses keeps the snippet."""

from __future__ import annotations

from dashserve.search.config import SearchConfig
from dashserve.search.pages import result_text, result_texts
from dashserve.search.results import SearchResult
from tests.utils.media_server import media_server

PAGE = (b"<html><head><title>t</title><script>var x = 1;</script></head><body>"
        b"<h1>West Lake</h1><p>The lake lies west of Hangzhou's old city.</p>"
        + b"<p>" + b"Willows line the Su causeway. " * 20 + b"</p></body></html>")


def hit(url: str) -> SearchResult:
    return SearchResult(title="West Lake", url=url, snippet="a lake in Hangzhou")


async def test_snippets_only_unless_pages_are_fetched() -> None:
    with media_server() as server:
        server.routes["/lake"] = (PAGE, "text/html; charset=utf-8")
        url = server.url("/lake")
        assert await result_text(hit(url)) == "a lake in Hangzhou"
        assert await result_text(hit(url), SearchConfig()) == "a lake in Hangzhou"
        config = SearchConfig(fetch_pages=True, page_allow_loopback=True, page_max_chars=100)
        text = await result_text(hit(url), config)
        assert text.startswith("West Lake") and "var x" not in text and len(text) == 100
        assert server.hosts  # the page was really requested


async def test_guarded_pages_fall_back_to_the_snippet() -> None:
    config = SearchConfig(fetch_pages=True)  # loopback refused, as in production
    with media_server() as server:
        server.routes["/lake"] = (PAGE, "text/html")
        server.routes["/bin"] = (b"\x89PNG....", "image/png")
        refused = await result_texts([hit(server.url("/lake")),
                                      hit("http://169.254.169.254/latest/meta-data/"),
                                      hit("file:///etc/passwd")], config)
        assert refused == ["a lake in Hangzhou"] * 3
        assert server.hosts == []  # nothing reached the loopback server
        open_config = SearchConfig(fetch_pages=True, page_allow_loopback=True)
        texts = await result_texts([hit(server.url("/bin")), hit(server.url("/missing"))],
                                   open_config)
        assert texts == ["a lake in Hangzhou"] * 2  # not text, not found: the snippet
