"""Any EngineClient (a dashserve engine process, a Ray Serve replica) as a member of a pool.

The pool routes by prefix affinity and load, retries before the first event and takes out
members that fail; this adapter gives an engine client what the pool asks of a member. A
lost engine (``ModelUnavailable`` from the client) is an endpoint fault the pool may retry
elsewhere; a busy one (``ServerBusy``) is tried elsewhere without being taken out; every
other error (a bad request) reaches the client unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from dashserve.contracts.engine_client import EngineClient
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.outputs import EngineEvent, EngineStats
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.errors import ModelUnavailable, ServerBusy
from dashserve.upstream.endpoint import UpstreamBusy, UpstreamError
from dashserve.upstream.pool import Pool, PoolPolicy
from dashserve.upstream.routing import Rotation, RoutingPolicy

log = logging.getLogger(__name__)


class EngineMember(Rotation):
    """Implements the pool's ``Member`` over ``client``; ``url`` names it in logs."""

    noun = "engine"
    ignores_seeds = False  # a dashserve engine follows seeds

    def __init__(self, client: EngineClient, url: str) -> None:
        super().__init__()
        self.client = client
        self.url = url
        self.num_outstanding = 0  # requests this front sent that have not finished

    @property
    def load(self) -> int:
        """Requests running or waiting in the engine (other fronts' too), at least ours."""
        stats = self.client.stats()
        return max(self.num_outstanding, stats.num_running + stats.num_waiting)

    def check(self, prompt_token_ids: list[int], params: SamplingParams,
              mm_inputs: Sequence[MultiModalInput] = ()) -> Any:
        """A dashserve engine takes every parameter; it validates the request itself."""
        return None

    async def describe(self, timeout_s: float = 2.0) -> None:
        """Nothing to read: a dashserve engine follows every parameter it takes."""

    async def submit(self, request: EngineRequest) -> AsyncGenerator[EngineEvent, None]:
        self.num_outstanding += 1
        started = False
        try:
            async for event in self.client.submit(request):
                started = True
                yield event
        except ServerBusy as exc:
            if started:
                raise
            raise UpstreamBusy(exc.message) from exc
        except ModelUnavailable as exc:
            if isinstance(exc, UpstreamError):
                raise
            raise UpstreamError(f"{self.url}: {exc.message}", is_retryable=not started,
                                is_endpoint_fault=True) from exc
        finally:
            self.num_outstanding -= 1

    async def probe(self, timeout_s: float = 2.0) -> bool:
        """Healthy again once the client reaches its engine (its own poller tells)."""
        return bool(getattr(self.client, "is_alive", True))

    async def scrape(self, timeout_s: float = 2.0) -> None:
        """The engine's load comes with its stats (``load``): nothing to read here."""

    async def abort(self, request_id: str) -> None:
        await self.client.abort(request_id)

    async def shutdown(self) -> None:
        await self.client.shutdown()

    def stats(self) -> EngineStats:
        return self.client.stats()


def engine_pool(name: str, clients: Sequence[EngineClient], *,
                policy: PoolPolicy | None = None, routing: RoutingPolicy | None = None) -> Pool:
    """One pool over engine clients of one model (they must share one tokenizer: the front
    renders every prompt once, for whichever engine the router picks)."""
    if not clients:
        raise ValueError(f"engine pool {name!r} has no engines")
    if len({getattr(c, "tokenizer_id", None) for c in clients}) > 1:
        raise ValueError(f"the engines of pool {name!r} have different tokenizers")
    members = [EngineMember(c, str(getattr(c, "url", f"{name}-{i}")))
               for i, c in enumerate(clients)]
    return Pool(name, members, clients[0].tokenizer, clients[0].model_info,
                routing=routing, policy=policy or PoolPolicy(probe_interval_s=1.0))
