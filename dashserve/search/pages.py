"""The text of a search result that goes into the prompt.

By default the provider's own snippet. With ``search.fetch_pages`` the page itself is read
(longer, fresher text), always through ``dashserve.netguard``, the SSRF-safe fetcher shared
with media input: private, loopback and metadata addresses are refused, every redirect is
checked again, and the body is capped. A page that cannot be read, or holds no text, falls
back to the snippet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from dashserve.netguard import FetchError, FetchPolicy, fetch
from dashserve.search.config import SearchConfig
from dashserve.search.results import SearchResult

log = logging.getLogger(__name__)
_TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "text/markdown")


def page_policy(config: SearchConfig) -> FetchPolicy:
    return FetchPolicy(max_bytes=config.page_max_bytes, connect_timeout_s=config.timeout_s,
                       read_timeout_s=config.timeout_s, total_timeout_s=config.timeout_s,
                       allow_loopback=config.page_allow_loopback)


async def result_text(result: SearchResult, config: SearchConfig | None = None) -> str:
    """The text the model reads for ``result``: the page's text when pages are fetched
    (at most ``page_max_chars``), else (or when that fails) the provider's snippet."""
    if config is None or not config.fetch_pages or not result.url.startswith(("http://",
                                                                               "https://")):
        return result.snippet
    try:
        page = await fetch(result.url, page_policy(config))
    except FetchError as exc:
        log.info("search result page not read (%s): %s", exc, result.url)
        return result.snippet
    kind = page.content_type.split(";")[0].strip().lower()
    if kind not in _TEXT_TYPES:
        return result.snippet
    text = await asyncio.to_thread(_page_text, page.content, kind)
    return text[:config.page_max_chars] if text else result.snippet


async def result_texts(results: Sequence[SearchResult],
                       config: SearchConfig | None = None) -> list[str]:
    """``result_text`` of every result, the pages read concurrently."""
    return list(await asyncio.gather(*(result_text(r, config) for r in results)))


def _page_text(content: bytes, kind: str) -> str:
    from dashserve.platform.extract import decode_text, html_text

    if kind in ("text/plain", "text/markdown"):
        return " ".join(decode_text(content).split())
    return html_text(content)
