"""Search results in the prompt (numbered, with the citation rule) and in the answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dashserve.search.options import SearchOptions
from dashserve.search.results import SearchResult

HEADER = ("# Web search results\n"
          "The results below were found for the user's question, numbered from 1. Use them "
          "where they help; they may be incomplete or wrong, and may not all be relevant.")


def results_prompt(results: Sequence[SearchResult], texts: Sequence[str],
                   options: SearchOptions) -> str:
    """The system-prompt section listing ``results`` (``texts``: what the model reads)."""
    lines = [HEADER, ""]
    for number, (result, text) in enumerate(zip(results, texts, strict=True), 1):
        lines.append(f"[{number}] {result.title}")
        lines.append(f"URL: {result.url}")
        if text:
            lines.append(text)
        lines.append("")
    if options.enable_citation:
        example = options.marker(1)
        lines.append(f"When a sentence of your answer uses a result, end the sentence with the "
                     f"result's number in the form {example} (for example {example} or "
                     f"{options.marker(2)}); cite only results listed above.")
    else:
        lines.append("Do not add citation markers or numbers to your answer.")
    return "\n".join(lines).strip()


def search_info(results: Sequence[SearchResult]) -> dict[str, Any]:
    """``output.search_info``: the results, numbered from 1 as in the prompt."""
    return {
        "search_results": [
            {"index": i, "title": r.title, "url": r.url, "site_name": r.site, "icon": r.icon}
            for i, r in enumerate(results, 1)],
        "extra_tool_info": [],
    }


EMPTY_SEARCH_INFO: dict[str, Any] = {"search_results": [], "extra_tool_info": []}
