"""What a search provider returns, and the interface every provider implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit


class SearchFailed(Exception):
    """A provider could not answer (timeout, HTTP error, unreadable reply)."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One hit: what the prompt shows (title, url, text) and what ``search_info`` lists."""

    title: str
    url: str
    snippet: str
    site_name: str = ""
    icon: str = ""

    @property
    def site(self) -> str:
        """The site's name: the provider's, else the URL's host."""
        return self.site_name or (urlsplit(self.url).hostname or "")


class SearchProvider(Protocol):
    """One search backend. ``search`` raises ``SearchFailed`` when it cannot answer."""

    name: str

    async def search(self, query: str, k: int) -> list[SearchResult]: ...

    async def aclose(self) -> None: ...


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters (on a word boundary when one is near)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit] + "…"
