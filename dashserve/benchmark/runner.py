"""Closed-loop load: N concurrent streaming clients against one server, summarized per run."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from dashserve.benchmark.client import (
    RequestResult,
    native_root,
    stream_compat,
    stream_native,
)
from dashserve.benchmark.report import BenchResult, summarize
from dashserve.benchmark.workload import PromptFactory, Workload, load_tokenizer

log = logging.getLogger(__name__)

APIS = ("compat", "dashscope")


@dataclass
class BenchConfig:
    """One benchmark run. ``num_requests`` None: 4 x clients unless ``duration_s`` is set;
    with ``duration_s`` no new request starts after that many seconds. Request i sends
    prompt ``first_prompt_index + i``: give later runs against the same server a fresh range
    (``run_sweep`` does) so that prefix caching does not serve repeated prompts."""

    base_url: str
    api: str = "compat"
    model: str | None = None  # None: the first model the server lists
    api_key: str | None = None
    clients: int = 1
    num_requests: int | None = None
    duration_s: float | None = None
    prompt_tokens: int = 256
    output_tokens: int = 128
    shared_prefix_tokens: int = 0
    temperature: float = 0.0
    seed: int = 0
    extra_body: dict[str, Any] = field(default_factory=dict)
    warmup: bool = True
    timeout_s: float = 600.0
    tokenizer: str | None = None  # a directory with tokenizer.json; None: bundled Qwen3
    label: str | None = None
    first_prompt_index: int = 0  # runs against one server should not repeat prompts

    def validate(self) -> None:
        if self.api not in APIS:
            raise ValueError(f"api must be one of {APIS}, not {self.api!r}")
        if self.clients < 1:
            raise ValueError("clients must be >= 1")
        if self.num_requests is not None and self.num_requests < 1:
            raise ValueError("num_requests must be >= 1")
        if self.output_tokens < 1:
            raise ValueError("output_tokens must be >= 1")

    def planned_requests(self) -> int | None:
        if self.num_requests is not None:
            return max(self.num_requests, self.clients)
        return None if self.duration_s is not None else 4 * self.clients

    def workload(self) -> Workload:
        return Workload(self.prompt_tokens, self.output_tokens, self.shared_prefix_tokens,
                        self.seed)


async def resolve_model(http: httpx.AsyncClient, config: BenchConfig) -> str:
    """``config.model``, or the first model the server lists."""
    if config.model:
        return config.model
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    if config.api == "compat":
        url = config.base_url.rstrip("/") + "/models"
    else:
        url = native_root(config.base_url) + "/api/v1/models"
    response = await http.get(url, headers=headers)
    response.raise_for_status()
    body = response.json()
    if config.api == "compat":
        names = [m.get("id") for m in body.get("data") or ()]
    else:
        names = [m.get("model") for m in (body.get("output") or {}).get("models") or ()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{url} lists no models; pass a model name")
    return str(names[0])


async def _one(http: httpx.AsyncClient, config: BenchConfig, model: str,
               prompts: PromptFactory, index: int, warmup: bool = False) -> RequestResult:
    send = stream_compat if config.api == "compat" else stream_native
    return await send(http, config.base_url, model, prompts.messages(index, warmup),
                      max_tokens=config.output_tokens, temperature=config.temperature,
                      api_key=config.api_key, extra_body=config.extra_body)


async def _closed_loop(http: httpx.AsyncClient, config: BenchConfig, model: str,
                       prompts: PromptFactory) -> tuple[list[RequestResult], float]:
    total = config.planned_requests()
    counter = itertools.count()
    results: list[RequestResult] = []
    started = time.perf_counter()
    deadline = None if config.duration_s is None else started + config.duration_s

    async def client() -> None:
        while True:
            index = next(counter)
            if total is not None and index >= total:
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            results.append(await _one(http, config, model, prompts,
                                      config.first_prompt_index + index))

    await asyncio.gather(*(client() for _ in range(config.clients)))
    return results, time.perf_counter() - started


def _http_client(config: BenchConfig) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=config.clients + 4,
                          max_keepalive_connections=config.clients + 4)
    timeout = httpx.Timeout(config.timeout_s, connect=min(30.0, config.timeout_s))
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)


async def run_benchmark(config: BenchConfig, prompts: PromptFactory | None = None) -> BenchResult:
    """Run one closed-loop benchmark; pass ``prompts`` to reuse a factory across runs."""
    config.validate()
    if prompts is None:
        prompts = PromptFactory(load_tokenizer(config.tokenizer), config.workload())
    async with _http_client(config) as http:
        model = await resolve_model(http, config)
        notes = []
        if config.warmup:
            warm = await _one(http, config, model, prompts, config.first_prompt_index, True)
            if not warm.ok:
                notes.append(f"the warm-up request failed: {warm.error}")
        log.info("benchmark %s: %d clients against %s (%s)", config.api, config.clients,
                 config.base_url, model)
        results, wall = await _closed_loop(http, config, model, prompts)
    recorded = {**dataclasses.asdict(config), "model": model}
    recorded.pop("api_key", None)
    result = summarize(config.label or config.api, config.clients, results, wall, recorded)
    result.notes[:0] = notes
    return result


async def run_sweep(config: BenchConfig, clients: Sequence[int]) -> list[BenchResult]:
    """One run per client count, in turn, sharing one prompt factory; each run sends
    prompts the previous runs did not."""
    config.validate()
    prompts = PromptFactory(load_tokenizer(config.tokenizer), config.workload())
    results, first = [], config.first_prompt_index
    for count in clients:
        run = dataclasses.replace(config, clients=count, first_prompt_index=first)
        results.append(await run_benchmark(run, prompts))
        first += results[-1].completed + results[-1].failed
    return results


def run_benchmark_sync(config: BenchConfig | None = None, **fields: Any) -> BenchResult:
    """``run_benchmark`` from synchronous code: a config, or its fields as keywords."""
    return asyncio.run(run_benchmark(config or BenchConfig(**fields)))


def run_sweep_sync(config: BenchConfig, clients: Sequence[int]) -> list[BenchResult]:
    return asyncio.run(run_sweep(config, clients))
