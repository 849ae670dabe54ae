"""Upstream specs → pools (EngineClients), one per spec, keyed by every served name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from dashserve.contracts.engine_client import EngineClient, ModelInfo
from dashserve.tokenizer import Tokenizer
from dashserve.upstream.config import UpstreamSpec
from dashserve.upstream.dialect import Dialect
from dashserve.upstream.endpoint import Endpoint
from dashserve.upstream.http import UpstreamHttp
from dashserve.upstream.llamacpp import LlamaCppCompletion
from dashserve.upstream.pool import Pool, PoolPolicy
from dashserve.upstream.routing import RoutingPolicy
from dashserve.upstream.sglang import SglangGenerate
from dashserve.upstream.vllm import OpenAICompletions, VllmCompletions

DIALECTS: dict[str, type[Dialect]] = {
    "openai": OpenAICompletions, "vllm": VllmCompletions, "sglang": SglangGenerate,
    "llamacpp": LlamaCppCompletion,
}
DEFAULT_CONTEXT = 32768


def model_info(spec: UpstreamSpec, tokenizer_dir: Path, tokenizer: Tokenizer) -> ModelInfo:
    """What serving needs to know of the upstream model, from its checkpoint's config.json."""
    cfg_path = tokenizer_dir / "config.json"
    cfg = json.loads(cfg_path.read_text("utf-8")) if cfg_path.is_file() else {}
    archs = cfg.get("architectures") or ["Qwen3ForCausalLM"]
    context = spec.max_model_len or cfg.get("max_position_embeddings") or DEFAULT_CONTEXT
    return ModelInfo(name=f"{spec.kind}:{spec.urls[0]}", architecture=str(archs[0]),
                     max_model_len=int(context),
                     vocab_size=int(cfg.get("vocab_size") or tokenizer.vocab_size))


def routing_policy(spec: UpstreamSpec) -> RoutingPolicy:
    return RoutingPolicy(block_tokens=spec.affinity_block_tokens, load_factor=spec.load_factor)


def pool_policy(spec: UpstreamSpec) -> PoolPolicy:
    return PoolPolicy(max_attempts=spec.max_attempts, probe_interval_s=spec.probe_interval_s)


def load_tokenizer(tokenizer_dir: Path) -> Tokenizer:
    """The tokenizer in ``tokenizer_dir``, ready for serving (seconds: share it)."""
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    tokenizer.prepare_for_serving()
    return tokenizer


def build_pool(spec: UpstreamSpec, tokenizer_dir: Path,
               tokenizer: Tokenizer | None = None) -> Pool:
    """One pool over ``spec.urls``; the endpoints share one HTTP client. ``tokenizer``:
    the one loaded from ``tokenizer_dir`` already (loaded here when None)."""
    tokenizer = tokenizer or load_tokenizer(tokenizer_dir)
    info = model_info(spec, tokenizer_dir, tokenizer)
    http = UpstreamHttp(connect_timeout_s=spec.connect_timeout_s,
                        read_timeout_s=spec.read_timeout_s, max_connections=spec.max_connections)
    headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else None
    dialect = DIALECTS[spec.kind]()
    endpoints = [Endpoint(url, dialect, tokenizer, info, http,
                          upstream_model=spec.upstream_model or spec.name, headers=headers)
                 for url in spec.urls]
    return Pool(spec.name, endpoints, tokenizer, info, routing=routing_policy(spec),
                policy=pool_policy(spec), http=http)


def build_engine_pool(spec: UpstreamSpec) -> Pool:
    """One pool over ``engine-serve`` processes (kind "dashserve"), reached on the token-id
    wire; the front renders with their own tokenizer files, fetched and checked here."""
    from dashserve.upstream.engine_member import engine_pool
    from dashserve.upstream.remote_engine import RemoteEngineClient

    async def connect() -> list[RemoteEngineClient]:
        return [await RemoteEngineClient.connect(url, secret=spec.api_key) for url in spec.urls]

    return engine_pool(spec.name, asyncio.run(connect()), policy=pool_policy(spec),
                       routing=routing_policy(spec))


def build_pools(specs: Sequence[UpstreamSpec], default_tokenizer: Path | None = None
                ) -> dict[str, EngineClient]:
    """Served name → pool for every spec (aliases share their pool)."""
    engines: dict[str, EngineClient] = {}
    tokenizers: dict[Path, Tokenizer] = {}  # pools of one model share its tokenizer
    for spec in specs:
        if spec.kind == "dashserve":
            engine_pool = build_engine_pool(spec)
            for name in spec.names:
                engines[name] = engine_pool
            continue
        tokenizer_dir = Path(spec.tokenizer) if spec.tokenizer else default_tokenizer
        if tokenizer_dir is None:
            raise ValueError(f"upstream {spec.name!r} names no tokenizer directory")
        if tokenizer_dir not in tokenizers:
            tokenizers[tokenizer_dir] = load_tokenizer(tokenizer_dir)
        pool = build_pool(spec, tokenizer_dir, tokenizers[tokenizer_dir])
        for name in spec.names:
            engines[name] = pool
    return engines
