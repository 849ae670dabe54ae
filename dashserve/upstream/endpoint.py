"""One upstream server as an EngineClient: request out over HTTP, stream back as events.

The front has already rendered the template and tokenized; the endpoint maps the request
with its dialect, streams the answer over the pool's shared HTTP client and tracks it
(``OutputTracker``). Leaving the event iterator (a client that went away, a stop string)
closes the HTTP stream at once, which makes the upstream abort the request.

Failures are ``UpstreamError``: ``is_retryable`` while nothing was yielded yet (another
endpoint may take the request), ``is_endpoint_fault`` when the endpoint itself looks
broken (connection refused or cut, 5xx), which takes it out of rotation until it answers
its health probe again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import aiohttp
import yarl

from dashserve.contracts.engine_client import ModelInfo
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.outputs import EngineEvent, EngineStats, FinishReason
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.errors import InvalidRequest, ModelUnavailable, PromptTooLong, ServerBusy
from dashserve.tokenizer import Tokenizer
from dashserve.upstream.dialect import Dialect, RequestPlan, metrics_load, sse_data
from dashserve.upstream.http import HttpFailure, UpstreamHttp
from dashserve.upstream.routing import Rotation
from dashserve.upstream.tracker import OutputTracker, ThinkIds

log = logging.getLogger(__name__)


class UpstreamError(ModelUnavailable):
    """An upstream could not serve the request (503 unless a retry elsewhere succeeds)."""

    def __init__(self, detail: str, *, is_retryable: bool, is_endpoint_fault: bool) -> None:
        # the client hears no upstream address; ``detail`` is for the logs
        super().__init__("Model is unavailable, please try again later (its upstream failed).")
        self.detail = detail
        self.is_retryable = is_retryable
        self.is_endpoint_fault = is_endpoint_fault


class UpstreamBusy(ServerBusy):
    """The upstream answered 429: try another endpoint, else 429 to the client."""


class Endpoint(Rotation):
    """An EngineClient over one upstream server (``url``) spoken to in ``dialect``."""

    def __init__(self, url: str, dialect: Dialect, tokenizer: Tokenizer, model_info: ModelInfo,
                 http: UpstreamHttp, *, upstream_model: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__()  # in rotation until it fails
        self.url = url.rstrip("/")
        self.dialect = dialect
        self.tokenizer = tokenizer
        self.model_info = model_info
        self.upstream_model = upstream_model
        self._http = http
        self._headers = headers or {}
        self._think = ThinkIds.of(tokenizer)
        self._open: dict[str, aiohttp.ClientResponse] = {}
        self._post_url = yarl.URL(self.url + dialect.path)  # parsed once, not per request
        # the last body ``check`` built, with the ids and params it was built from: the pool
        # checks a request just before it submits it, and the endpoint then reuses the body
        self._checked: tuple[list[int], SamplingParams, dict[str, Any]] | None = None
        self._described = not dialect.info_paths  # the server's description was read
        self.ignores_seeds = False  # it says it does not follow seeds (once described)
        self._describing: asyncio.Future[None] | None = None  # the read under way
        self.num_outstanding = 0  # requests this front sent and that have not finished
        self.num_external = 0  # requests other fronts have there (from its metrics)
        self.num_requests = 0

    def __repr__(self) -> str:
        return f"Endpoint({self.dialect.kind} {self.url})"

    def plan(self, prompt_token_ids: list[int], params: SamplingParams) -> RequestPlan:
        room = self.model_info.max_model_len - len(prompt_token_ids)
        # with a thinking block the answer limit is enforced here (token ids needed), so the
        # upstream gets the room; text kinds can only bound reasoning and answer together
        answer_limit_here = params.starts_in_thinking and self.dialect.sends_token_ids
        ask = room if answer_limit_here or params.max_tokens is None else min(
            params.max_tokens, room)
        text = "" if self.dialect.sends_token_ids else self.tokenizer.decode(prompt_token_ids)
        return RequestPlan(self.upstream_model, list(prompt_token_ids), max(1, ask), text)

    def check(self, prompt_token_ids: list[int], params: SamplingParams,
              mm_inputs: Sequence[MultiModalInput] = ()) -> dict[str, Any]:
        """The upstream body; raises DashScope's 400 for what this kind cannot do."""
        if mm_inputs:
            raise self.dialect.refuse("input", "image and video input")
        checked = self._checked
        if checked is not None and checked[0] is prompt_token_ids and checked[1] is params:
            return checked[2]
        body = self.dialect.request_body(self.plan(prompt_token_ids, params), params)
        self._checked = (prompt_token_ids, params, body)
        return body

    async def submit(self, request: EngineRequest) -> AsyncGenerator[EngineEvent, None]:
        request_id, prompt_token_ids = request.request_id, request.prompt_token_ids
        params, mm_inputs = request.params, request.mm_inputs
        body = self.check(prompt_token_ids, params, mm_inputs)
        self._checked = None
        tracker = OutputTracker(request_id, self.tokenizer, params, len(prompt_token_ids),
                                self._think)
        self.num_outstanding += 1
        self.num_requests += 1
        try:
            while True:
                async with self._http.session().post(self._post_url, json=body,
                                                     headers=self._headers) as response:
                    self._open[request_id] = response
                    if response.status != 200:
                        await self._refuse(response)
                    try:
                        async with contextlib.aclosing(self._events(response, tracker)) as events:
                            async for event in events:
                                yield event
                    finally:
                        if not response.content.at_eof():
                            response.close()  # the upstream sees the disconnect and stops
                if not tracker.budget_spent or tracker.local_finish is not None:
                    break
                # thinking_budget spent: close the block, then continue in a new request
                # whose prompt holds everything so far (the upstream's prefix cache has it)
                yield tracker.close_thinking()
                prompt = [*prompt_token_ids, *tracker.output_ids]
                if len(prompt) >= self.model_info.max_model_len:
                    tracker.local_finish = FinishReason.LENGTH
                    break
                body = self.dialect.request_body(self.plan(prompt, params), params)
        except HttpFailure as exc:
            raise UpstreamError(f"{self.url}: {type(exc).__name__}: {exc}",
                                is_retryable=not tracker.has_output,
                                is_endpoint_fault=True) from exc
        finally:
            self._open.pop(request_id, None)
            self.num_outstanding -= 1
        if tracker.finish_reason is None:
            raise UpstreamError(f"{self.url} ended the stream before the request finished",
                                is_retryable=not tracker.has_output, is_endpoint_fault=True)
        yield tracker.final()

    async def _events(self, response: aiohttp.ClientResponse,
                      tracker: OutputTracker) -> AsyncGenerator[EngineEvent, None]:
        """The events of one upstream stream, until it ends or the front ends it."""
        async for raw in response.content:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            try:
                data = sse_data(line)
            except ValueError as exc:
                raise UpstreamError(f"{self.url} sent a line that is not JSON: {line[:80]!r}",
                                    is_retryable=not tracker.has_output,
                                    is_endpoint_fault=True) from exc
            if data is None:
                continue
            if "error" in data:
                raise UpstreamError(f"{self.url}: {str(data['error'])[:200]}",
                                    is_retryable=not tracker.has_output,
                                    is_endpoint_fault=False)
            try:
                chunk = self.dialect.parse(data)
            except ValueError as exc:  # a stream this kind cannot follow: a misconfigured server
                raise UpstreamError(f"{self.url}: {exc}", is_retryable=not tracker.has_output,
                                    is_endpoint_fault=True) from exc
            if chunk is None:
                continue
            event = tracker.feed(chunk)
            if event is not None:
                yield event
            if tracker.local_finish is not None or tracker.budget_spent:
                return  # leaving the stream closes it: the upstream stops generating

    async def _refuse(self, response: aiohttp.ClientResponse) -> None:
        """Raise the error for a non-200 answer (read before the stream closes)."""
        raw = (await response.read()).decode("utf-8", "replace")
        status = response.status
        message = _error_message(raw)
        if status == 429:
            log.info("upstream %s busy (429): %s", self.url, message)
            raise UpstreamBusy("Requests throttling triggered (the model's upstreams are busy).")
        if 400 <= status < 500 and status not in (404, 408):
            if "context" in message.lower() or "too long" in message.lower():
                raise PromptTooLong(message, param="input")
            raise InvalidRequest(message)
        raise UpstreamError(f"{self.url} answered {status}: {message}", is_retryable=True,
                            is_endpoint_fault=True)

    async def probe(self, timeout_s: float = 2.0) -> bool:
        """The upstream's health endpoint answers 200."""
        try:
            status, _ = await self._http.get(self.url + self.dialect.health_path, self._headers,
                                             timeout_s)
        except HttpFailure:
            return False
        return status == 200

    @property
    def load(self) -> int:
        """Requests running or queued there, ours and other fronts' (the router's measure)."""
        return self.num_outstanding + self.num_external

    async def describe(self, timeout_s: float = 2.0) -> None:
        """Read, once, how the server says it was started, and log what the dialect makes of
        it (``Dialect.info_paths``); a server that does not answer is asked again later.
        Callers at the same time (the probe task, a seeded request) share one read."""
        if self._described:
            return
        if self._describing is None or self._describing.done():
            self._describing = asyncio.ensure_future(self._read_description(timeout_s))
        await asyncio.shield(self._describing)

    async def _read_description(self, timeout_s: float) -> None:
        for path in self.dialect.info_paths:
            try:
                status, text = await self._http.get(self.url + path, self._headers, timeout_s)
            except HttpFailure:
                return  # asked again at the next probe
            try:
                info = json.loads(text) if status == 200 else None
            except ValueError:
                info = None
            if isinstance(info, dict):
                self.ignores_seeds = self.dialect.ignores_seeds(info)
                for warning in self.dialect.info_warnings(info):
                    log.warning("upstream %s (%s): %s", self.url, self.dialect.kind, warning)
                break
        self._described = True  # it answered: described, or it has no description to read

    async def scrape(self, timeout_s: float = 2.0) -> None:
        """Read the upstream's load gauges; requests beyond ours are other fronts'."""
        await self.describe(timeout_s)
        if self.dialect.metrics_path is None:
            return
        try:
            status, text = await self._http.get(self.url + self.dialect.metrics_path,
                                                self._headers, timeout_s)
            if status != 200:
                return
            total = metrics_load(text, self.dialect.load_metrics)
        except (*HttpFailure, ValueError):
            return  # no metrics is no fault: health probes and requests decide that
        self.num_external = max(0, total - self.num_outstanding)

    async def abort(self, request_id: str) -> None:
        response = self._open.pop(request_id, None)
        if response is not None:
            response.close()

    def stats(self) -> EngineStats:
        return EngineStats(num_waiting=0, num_running=self.num_outstanding,
                           num_kv_blocks_total=0, num_kv_blocks_free=0)

    async def shutdown(self) -> None:
        return None


def _error_message(raw: str) -> str:
    """The message of an upstream's error body (OpenAI, llama.cpp or SGLang shapes)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.strip()[:300] or "no message"
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:300]
    return str(error)[:300]
