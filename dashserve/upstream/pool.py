"""A pool of upstream endpoints serving one model, itself an EngineClient.

Each request goes to the endpoint the ``Router`` picks. Until the first event has been
handed on (nothing has reached the client yet), a failed or busy endpoint is skipped and
the next one tried, up to ``max_attempts``; after that a failure ends the request with 503.
An endpoint that fails (refused or cut connection, 5xx) is taken out of rotation; the
pool's probe task asks its health endpoint every ``probe_interval_s`` and puts it back once
it answers 200; meanwhile it reads the healthy endpoints' load gauges from their metrics, so
the router sees the requests other front processes put there. The probe task belongs to the
pool: started by the first request, ended by ``shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dashserve.contracts.engine_client import ModelInfo
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.outputs import EngineEvent, EngineStats
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.errors import DashServeError, ModelUnavailable, UnsupportedFeature
from dashserve.tokenizer import Tokenizer
from dashserve.upstream.endpoint import UpstreamBusy, UpstreamError
from dashserve.upstream.http import UpstreamHttp
from dashserve.upstream.routing import Router, RoutingPolicy

log = logging.getLogger(__name__)


class Member(Protocol):
    """What a pool needs of each endpoint (``endpoint.Endpoint``; other transports to an
    engine can join a pool by providing the same). ``submit`` raises ``UpstreamError`` /
    ``UpstreamBusy`` so the pool knows whether to retry elsewhere and whether to eject."""

    url: str
    is_healthy: bool
    num_outstanding: int
    ignores_seeds: bool  # it does not follow ``seed`` (known once described)

    @property
    def load(self) -> int: ...

    def check(self, prompt_token_ids: list[int], params: SamplingParams,
              mm_inputs: Sequence[MultiModalInput] = ()) -> Any: ...

    def submit(self, request: EngineRequest) -> AsyncGenerator[EngineEvent, None]: ...

    async def probe(self, timeout_s: float = 2.0) -> bool: ...

    async def scrape(self, timeout_s: float = 2.0) -> None: ...

    async def describe(self, timeout_s: float = 2.0) -> None: ...

    def eject(self, reason: str = "") -> None: ...

    def restore(self) -> None: ...

    def stats(self) -> EngineStats: ...

    async def abort(self, request_id: str) -> None: ...

    async def shutdown(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """Retries and health checking of a pool."""

    max_attempts: int = 3  # endpoints tried per request before the first event
    probe_interval_s: float = 2.0  # how often taken-out endpoints are probed
    probe_timeout_s: float = 2.0


class Pool:
    """Implements EngineClient over ``endpoints`` (all serving the same model)."""

    def __init__(self, name: str, endpoints: Sequence[Member], tokenizer: Tokenizer,
                 model_info: ModelInfo, *, routing: RoutingPolicy | None = None,
                 policy: PoolPolicy | None = None, http: UpstreamHttp | None = None) -> None:
        if not endpoints:
            raise ValueError(f"upstream pool {name!r} has no endpoints")
        self.name = name
        self.endpoints = list(endpoints)
        self.tokenizer = tokenizer
        self.model_info = model_info
        self.router = Router(routing)
        self.policy = policy or PoolPolicy()
        self._http = http  # closed by shutdown (the endpoints share it)
        self._prober: asyncio.Task[None] | None = None
        self._where: dict[str, Member] = {}

    @property
    def healthy(self) -> list[Member]:
        return [e for e in self.endpoints if e.is_healthy]

    async def submit(self, request: EngineRequest) -> AsyncIterator[EngineEvent]:
        request_id, prompt_token_ids = request.request_id, request.prompt_token_ids
        params, mm_inputs = request.params, request.mm_inputs
        self.endpoints[0].check(prompt_token_ids, params, mm_inputs)  # 400s before routing
        self._ensure_prober()
        tried: list[Member] = []
        if params.seed_requested:  # only servers that follow seeds take a client's seed
            tried = await self._ignoring_seeds()
        last: DashServeError | None = None
        for _ in range(self.policy.max_attempts):
            endpoint = self.router.pick(self.endpoints, prompt_token_ids, tried)
            if endpoint is None:
                break
            tried.append(endpoint)
            started = False
            self._where[request_id] = endpoint
            try:
                async with contextlib.aclosing(endpoint.submit(request)) as events:
                    async for event in events:
                        started = True
                        yield event
                return
            except UpstreamError as exc:
                if exc.is_endpoint_fault:
                    endpoint.eject(exc.detail)
                    self._ensure_prober()
                if started or not exc.is_retryable:
                    log.error("request %s failed on its upstream: %s", request_id, exc.detail)
                    raise
                log.warning("request %s: %s; trying another endpoint", request_id, exc.detail)
                last = exc
            except UpstreamBusy as exc:
                if started:
                    raise
                last = exc
            finally:
                self._where.pop(request_id, None)
        raise last or ModelUnavailable(
            f"Model is unavailable, please try again later (no healthy upstream for "
            f"{self.name!r}).")

    async def _ignoring_seeds(self) -> list[Member]:
        """The endpoints that do not follow seeds (each is described once, here or by the
        probe task); a 400 when all of them are (while one that does is only down, 503)."""
        await asyncio.gather(*(e.describe(self.policy.probe_timeout_s) for e in self.endpoints))
        ignoring = [e for e in self.endpoints if e.ignores_seeds]
        if len(ignoring) == len(self.endpoints):
            raise UnsupportedFeature(
                "seed is not supported by this model's upstream (its servers were started "
                "without deterministic sampling, so a seed would not make answers "
                "repeatable)", param="seed")
        return ignoring

    def _ensure_prober(self) -> None:
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(
                self._probe_loop(), name=f"upstream-probe-{self.name}")

    async def _probe_loop(self) -> None:
        """Every ``probe_interval_s``: probe taken-out endpoints (back in rotation once
        healthy) and read the others' load from their metrics."""
        while True:
            await asyncio.sleep(self.policy.probe_interval_s)
            down = [e for e in self.endpoints if not e.is_healthy]
            up = [e for e in self.endpoints if e.is_healthy]
            timeout = self.policy.probe_timeout_s
            results = await asyncio.gather(*(e.probe(timeout) for e in down),
                                           *(e.scrape(timeout) for e in up))
            for endpoint, ok in zip(down, results, strict=False):
                if ok:
                    endpoint.restore()

    async def check_health(self) -> None:
        """Probe every endpoint once now: take out those that fail, restore those that answer."""
        results = await asyncio.gather(*(e.probe(self.policy.probe_timeout_s)
                                         for e in self.endpoints))
        for endpoint, ok in zip(self.endpoints, results, strict=True):
            if ok:
                endpoint.restore()
            else:
                endpoint.eject("health probe failed")
        self._ensure_prober()

    async def abort(self, request_id: str) -> None:
        endpoint = self._where.get(request_id)
        if endpoint is not None:
            await endpoint.abort(request_id)

    @property
    def is_alive(self) -> bool:
        """False while every member is out of rotation (the registry shows it)."""
        return bool(self.healthy)

    def stats(self) -> EngineStats:
        """The members' stats summed (upstream servers report only our requests)."""
        return EngineStats.summed(e.stats() for e in self.endpoints)

    async def shutdown(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        for endpoint in self.endpoints:
            await endpoint.shutdown()
        if self._http is not None:
            await self._http.aclose()
