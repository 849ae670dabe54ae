"""The text of a search result that goes into the prompt.

Today this is the provider's own snippet. Fetching the page itself (for longer, fresher
text) belongs here and nowhere else: it must go through ``dashserve.netguard``, the
SSRF-safe fetcher shared with media input, once that module is available.
"""

from __future__ import annotations

from dashserve.search.results import SearchResult


async def result_text(result: SearchResult) -> str:
    """The text the model reads for ``result``: the snippet the provider returned.

    The one place where page fetching plugs in (through ``dashserve.netguard``).
    """
    return result.snippet
