"""Web search for one request: decide, search, and put the results in the prompt.

``forced_search`` always searches, with the last user message as the query. Otherwise a
short first pass lets the model decide: it sees a ``web_search`` tool and either calls it
(the call's ``query`` is searched) or not (no search). The ``agent`` strategy repeats that
pass up to ``agent_rounds`` times, each round seeing the results so far. ``turbo`` asks the
first provider for ``results_turbo`` results, ``max`` asks every provider for
``results_max`` and merges them.

A provider that fails is logged; the answer comes without its results, except with
``forced_search``, where the request fails with 503 (the client asked for a search).
The tokens of the decision passes are billed with the request's input tokens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.errors import SearchUnavailable
from dashserve.search.config import SearchBackends
from dashserve.search.options import SearchOptions
from dashserve.search.pages import result_texts
from dashserve.search.prompt import results_prompt
from dashserve.search.results import SearchFailed, SearchResult, clip
from dashserve.serving.prompt import build_prompt
from dashserve.serving.registry import ServedModel
from dashserve.serving.request import Message
from dashserve.serving.tool_calls import parse_tool_calls

log = logging.getLogger(__name__)

QUERY_CHARS = 300
WEB_SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "web_search",
        "description": "Search the web. Call it when the question needs current or factual "
                       "information you are not sure of; otherwise answer directly.",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string", "description": "the search query"}},
            "required": ["query"]},
    },
}


@dataclass(slots=True)
class SearchOutcome:
    """What the search did for a request: its results (numbered from 1 in this order)."""

    options: SearchOptions
    results: list[SearchResult] = field(default_factory=list)
    count: int = 0  # searches that answered
    overhead_tokens: int = 0  # prompt + output tokens of the decision passes
    prompt: str | None = None  # the system-prompt section (None: no results)
    texts: list[str] = field(default_factory=list)  # what the model reads of each result

    def keep(self, n: int) -> SearchOutcome:
        """The outcome with only the first ``n`` results (a prompt that did not fit)."""
        results, texts = self.results[:n], self.texts[:n]
        prompt = results_prompt(results, texts, self.options) if results else None
        return dataclasses.replace(self, results=results, texts=texts, prompt=prompt)


def last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user" and message.content.strip():
            return clip(message.content, QUERY_CHARS)
    return ""


def with_system(messages: Sequence[Message], text: str) -> tuple[Message, ...]:
    """``messages`` with ``text`` added to the first system message (or a new one)."""
    if messages and messages[0].role == "system":
        first = messages[0]
        joined = f"{first.content}\n\n{text}" if first.content else text
        return (dataclasses.replace(first, content=joined), *messages[1:])
    return (Message("system", text), *messages)


def _merge(into: list[SearchResult], new: Sequence[SearchResult], limit: int) -> None:
    seen = {r.url for r in into}
    for result in new:
        if result.url not in seen and len(into) < limit:
            into.append(result)
            seen.add(result.url)


class WebSearch:
    """Runs the search part of requests against the configured ``SearchBackends``."""

    def __init__(self, backends: SearchBackends) -> None:
        self.backends = backends
        self.config = backends.config

    async def _search(self, query: str, options: SearchOptions) -> list[SearchResult]:
        """One search: the first provider (turbo, agent) or all of them (max)."""
        if options.strategy == "max":
            k, providers = self.config.results_max, self.backends.providers
        else:
            k, providers = self.config.results_turbo, self.backends.providers[:1]
        answers = await asyncio.gather(*(p.search(query, k) for p in providers),
                                       return_exceptions=True)
        merged: list[SearchResult] = []
        failures = []
        for provider, answer in zip(providers, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, (SearchFailed, OSError, asyncio.TimeoutError)):
                    log.error("search provider %s failed", provider.name, exc_info=answer)
                failures.append(f"{provider.name}: {answer}")
                continue
            _merge(merged, answer, k)
        if len(failures) == len(providers):
            raise SearchFailed("; ".join(failures))
        for failure in failures:
            log.warning("search provider failed: %s", failure)
        return merged

    async def _decide(self, served: ServedModel, request_id: str, messages: Sequence[Message],
                      round_no: int) -> tuple[str | None, int]:
        """One decision pass: the query the model wants searched (None: no search) and the
        tokens it took."""
        tokenizer = served.engine.tokenizer
        prompt = build_prompt(tokenizer, messages, enable_thinking=False,
                              tools=[WEB_SEARCH_TOOL])
        params = SamplingParams(temperature=0.0, max_tokens=self.config.decide_max_tokens,
                                seed=1234)
        text: list[str] = []
        output_tokens = 0
        events = served.engine.submit(
            EngineRequest(f"{request_id}-search-{round_no}", prompt, params))
        try:
            async for event in events:
                text.append(event.text)
                output_tokens = max(output_tokens, event.num_output_tokens)
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        _, calls = parse_tool_calls("".join(text))
        spent = len(prompt) + output_tokens
        for call in calls:
            if call.name != "web_search":
                continue
            try:
                args = json.loads(call.arguments or "{}")
            except ValueError:
                continue
            query = args.get("query") if isinstance(args, dict) else None
            if isinstance(query, str) and query.strip():
                return clip(query, QUERY_CHARS), spent
        return None, spent

    async def run(self, served: ServedModel, request_id: str, messages: Sequence[Message],
                  options: SearchOptions) -> SearchOutcome:
        outcome = SearchOutcome(options)
        limit = self.config.results_max if options.strategy != "turbo" \
            else self.config.results_turbo
        if options.forced_search:
            query: str | None = last_user_text(messages)
            if query:
                try:
                    _merge(outcome.results, await self._search(query, options), limit)
                except SearchFailed as exc:
                    log.warning("forced search failed: %s", exc)
                    raise SearchUnavailable(
                        "Web search is unavailable (forced_search was set), please try "
                        "again later.") from exc
                outcome.count += 1
        else:
            rounds = self.config.agent_rounds if options.strategy == "agent" else 1
            seen: list[Message] = list(messages)
            for round_no in range(rounds):
                query, spent = await self._decide(served, request_id, seen, round_no)
                outcome.overhead_tokens += spent
                if query is None:
                    break
                try:
                    found = await self._search(query, options)
                except SearchFailed as exc:
                    log.warning("search failed, answering without it: %s", exc)
                    break
                outcome.count += 1
                _merge(outcome.results, found, limit)
                texts = await result_texts(outcome.results, self.config)
                seen = list(with_system(messages, results_prompt(outcome.results, texts,
                                                                 options)))
        if outcome.results:
            outcome.texts = await result_texts(outcome.results, self.config)
            outcome.prompt = results_prompt(outcome.results, outcome.texts, options)
        return outcome
