"""``dashserve serve``: settings from flags, engines loaded in the background, uvicorn in front.

``--served-model-name`` names the ``--model`` given just before it (or the demo model
when no ``--model`` is given), so several models can be served from the command line:
``--model A --served-model-name qwen-plus --model B --served-model-name qwen-max``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from dashserve.app import EngineLoader, create_app
from dashserve.config import ModelSpec, Settings
from dashserve.contracts.engine_client import EngineClient
from dashserve.model.config import DEMO_MAX_TOKENS_KEY
from dashserve.platform.blobs import LocalBlobStore
from dashserve.platform.files import FileLimits, FileService
from dashserve.platform.logs import configure_logging
from dashserve.platform.state import add_platform_arguments, prepare_platform
from dashserve.serving.registry import ModelRegistry, ServerState
from dashserve.store.db import Store
from dashserve.upstream.config import UpstreamSpec, parse_upstream_flag

if TYPE_CHECKING:
    from dashserve.engine.engine import EngineConfig

log = logging.getLogger("dashserve.serve")

# What the demo model answers to a request that sets no max_tokens: its random weights never
# emit an end token, so without a limit every answer would run to the context's end.
DEMO_MAX_NEW_TOKENS = 100

_OPTIONAL = MappingProxyType({  # flag dest -> Settings field, copied only when given
    "host": "host", "port": "port", "config": "config_file", "data_dir": "data_dir",
    "dtype": "dtype", "max_model_len": "max_model_len", "kv_cache_gb": "kv_cache_gb",
    "max_num_seqs": "max_num_seqs", "max_num_batched_tokens": "max_num_batched_tokens",
    "partial_timeout": "partial_response_timeout_s", "shutdown_grace": "shutdown_grace_s",
    "demo_preset": "demo_preset", "log_level": "log_level", "log_format": "log_format",
    "database_url": "database_url", "redis_url": "redis_url", "console": "console",
    "share_prefix_cache": "share_prefix_cache",
    "max_inflight_per_model": "max_inflight_per_model", "max_waiting": "max_waiting",
    "max_kv_usage": "max_kv_usage", "api_key_rpm": "api_key_rpm", "api_key_tpm": "api_key_tpm",
    "api_key_max_concurrency": "api_key_max_concurrency",
    "public_url": "public_url", "allowed_local_media_path": "allowed_local_media_path",
    "files_dir": "files_dir", "max_file_bytes": "max_file_bytes",
})


class _ModelAction(argparse.Action):
    """``--model X`` starts a new model entry."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        models = list(getattr(namespace, "models", None) or [])
        models.append({"model": values})
        namespace.models = models


class _NamesAction(argparse.Action):
    """``--served-model-name A B`` names the most recent ``--model`` (or the demo)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        models = list(getattr(namespace, "models", None) or [])
        if models:
            models[-1] = {**models[-1], "served_model_names": list(values)}
            namespace.models = models
        else:
            namespace.demo_names = list(values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", action=_ModelAction, dest="models", metavar="DIR|HUB_ID",
        help="checkpoint to serve (repeatable); none: the random-weight demo model")
    add("--served-model-name", action=_NamesAction, nargs="+", dest="demo_names",
        metavar="NAME", help="names for the preceding --model, e.g. qwen-plus qwen3-8b")
    add("--host", help="bind address (default 127.0.0.1)")
    add("--port", type=int, help="port (default 8000)")
    add("--api-key", action="append", dest="api_keys", metavar="KEY",
        help="an API key always accepted, besides the keys in the database (repeatable); "
             "with no keys at all a first start creates one and prints it")
    add("--config", type=Path, metavar="FILE", help="TOML or JSON settings file")
    add("--data-dir", type=Path, help="where the demo model is cached "
        "(default ~/.local/share/dashserve, env DASHSERVE_DATA_DIR)")
    add("--dtype", help="weight dtype: auto, bfloat16, float16, float32")
    add("--max-model-len", type=int, help="context length limit in tokens")
    add("--kv-cache-gb", type=float, help="KV cache size in GiB")
    add("--max-num-seqs", type=int, help="most sequences decoded together")
    add("--max-num-batched-tokens", type=int, help="token budget of one engine step")
    add("--partial-timeout", type=float, metavar="SECONDS",
        help="non-stream cut-off returning a partial answer (default 280)")
    add("--shutdown-grace", type=float, metavar="SECONDS",
        help="how long shutdown waits for requests in flight (default 30)")
    add("--max-inflight-per-model", type=int, metavar="N",
        help="requests one engine holds, running or queued; more get 429 (default 256)")
    add("--max-waiting", type=int, metavar="N",
        help="queued requests at which an engine turns new ones away with 429 (default: none)")
    add("--max-kv-usage", type=float, metavar="FRACTION",
        help="KV cache use at which an engine with a queue turns new requests away (default 1.0)")
    add("--api-key-rpm", type=int, metavar="N", help="requests per minute of each --api-key key")
    add("--api-key-tpm", type=int, metavar="N", help="tokens per minute of each --api-key key")
    add("--api-key-concurrency", type=int, dest="api_key_max_concurrency", metavar="N",
        help="requests in flight at once for each --api-key key")
    add("--share-prefix-cache", action="store_true", default=None,
        help="one prefix cache for all workspaces (single tenant); by default each "
             "workspace reuses only its own cached prompts")
    add("--public-url", metavar="URL", help="base URL clients reach this server at (named "
        "in the SDK's upload policies; default: the request's own)")
    add("--allowed-local-media-path", type=Path, metavar="DIR",
        help="let file:// and path image references read files under DIR (default: refused)")
    add("--demo-preset", help=argparse.SUPPRESS)
    add("--log-level", choices=("debug", "info", "warning", "error"))
    add("--no-console", dest="console", action="store_false", default=None,
        help="do not serve the web console at /console")
    add("--search-provider", action="append", dest="search_providers",
        choices=("local", "searxng", "http"),
        help="web search provider for enable_search (repeatable; the first serves 'turbo', "
             "all serve 'max'); the http provider is configured in the config file")
    add("--search-index", type=Path, metavar="DIR",
        help="directory of .txt/.md/.html documents for the local search index")
    add("--searxng-url", metavar="URL", help="base URL of a SearXNG instance (JSON enabled)")
    add("--files-dir", type=Path, help="where uploaded files are kept (default DATA_DIR/files; "
        "server processes sharing a database must share it)")
    add("--max-file-bytes", type=int, metavar="BYTES",
        help="largest file the files API accepts (default 150 MiB)")
    add("--log-format", choices=("text", "json"),
        help="text lines (default) or JSON lines (env DASHSERVE_LOG_FORMAT)")
    add_platform_arguments(parser)
    add_upstream_arguments(parser)
    add_ray_arguments(parser)


def add_upstream_arguments(parser: argparse.ArgumentParser) -> None:
    """Upstream pools from flags (the config file's ``[[upstreams]]`` has every option)."""
    parser.add_argument("--upstream", action="append", dest="upstreams",
                        metavar="NAME=KIND:URL[,URL...]",
                        help="serve NAME from a pool of upstream servers of KIND (openai, vllm, "
                             "sglang, llamacpp, dashserve), e.g. qwen3-8b=vllm:http://gpu1:8000,"
                             "http://gpu2:8000 (repeatable)")
    parser.add_argument("--upstream-tokenizer", metavar="DIR",
                        help="checkpoint or tokenizer directory of the --upstream models "
                             "(default: the demo model's Qwen3 tokenizer)")


def upstreams_from_args(args: argparse.Namespace) -> list[UpstreamSpec]:
    tokenizer = getattr(args, "upstream_tokenizer", None)
    return [parse_upstream_flag(flag, tokenizer) for flag in getattr(args, "upstreams", None) or []]


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray``: engine replicas as Ray Serve deployments (the ``[ray]`` config section)."""
    add = parser.add_argument
    add("--ray", dest="ray_enabled", action="store_true", default=None,
        help="run the engines as Ray Serve replicas (needs the 'ray' extra)")
    add("--replicas", dest="ray_replicas", type=int, metavar="N",
        help="engine replicas of each model with --ray (default 2)")
    add("--ray-address", metavar="ADDRESS",
        help="an existing Ray cluster (default: a local Ray instance)")


def _ray_values(args: argparse.Namespace) -> dict[str, Any]:
    return {field: getattr(args, dest) for dest, field in (
        ("ray_enabled", "enabled"), ("ray_replicas", "replicas"), ("ray_address", "address"))
        if getattr(args, dest, None) is not None}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the flags that were given (env and the config file fill the rest)."""
    values: dict[str, Any] = {field: getattr(args, dest) for dest, field in _OPTIONAL.items()
                              if getattr(args, dest, None) is not None}
    if getattr(args, "api_keys", None):
        values["api_keys"] = args.api_keys
    if getattr(args, "admin_keys", None):
        values["admin_keys"] = args.admin_keys
    if getattr(args, "models", None):
        values["models"] = [ModelSpec(**m) for m in args.models]
    if getattr(args, "upstreams", None):
        values["upstreams"] = upstreams_from_args(args)
    if getattr(args, "demo_names", None) and not getattr(args, "models", None):
        values["demo_names"] = args.demo_names
    search = {field: getattr(args, dest) for dest, field in (
        ("search_providers", "providers"), ("search_index", "index_dir"),
        ("searxng_url", "searxng_url")) if getattr(args, dest, None) is not None}
    if search:
        values["search"] = search
    ray = _ray_values(args)
    if ray:  # flags over the config file's [ray] section
        file_ray = Settings(**values).ray.model_dump()
        values["ray"] = {**file_ray, **ray}
    return Settings(**values)


def ensure_demo_model(settings: Settings,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """The demo checkpoints (text, and vision unless turned off), each made once (atomically)
    and cached in the data dir: weights whose answers end on their own, and at most
    ``DEMO_MAX_NEW_TOKENS`` tokens for requests that set no max_tokens. A demo cached by an
    older dashserve (without them) is made again. Returns the text demo's directory."""
    for preset, out, _ in settings.demo_models():
        _ensure_demo(preset, out, progress)
    return settings.demo_dir


def _ensure_demo(preset: str, out: Path, progress: Callable[[int, int], None] | None) -> None:
    if (out / "config.json").is_file() and _is_current_demo(out):
        return
    from dashserve.model.make import make_model

    log.warning("making the demo model (%s, random weights) in %s, once", preset, out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    make_model(preset, tmp, seed=0, demo_max_new_tokens=DEMO_MAX_NEW_TOKENS,
               progress=progress)
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        out.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    tmp.rename(out)


def _is_current_demo(out: Path) -> bool:
    try:
        gen = json.loads((out / "generation_config.json").read_text())
    except (OSError, ValueError):
        return False
    return DEMO_MAX_TOKENS_KEY in gen


class StageReporter:
    """Start-up progress: the current stage in ``/health``'s detail, and on the console each
    new stage plus its progress every few seconds."""

    def __init__(self, registry: ModelRegistry, every_s: float = 3.0) -> None:
        self.registry = registry
        self.every_s = every_s
        self._stage = ""
        self._logged = 0.0

    def __call__(self, stage: str, done: int | None = None, total: int | None = None) -> None:
        text = stage if done is None or total is None else f"{stage} {done}/{total}"
        self.registry.detail = text
        now = time.monotonic()
        if stage != self._stage or now - self._logged >= self.every_s or done == total:
            if done is not None and total:
                log.info("%s %s %d/%d", stage, _bar(done / total), done, total)
            else:
                log.info("%s", stage)
            self._stage, self._logged = stage, now


def _bar(fraction: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def engine_config(settings: Settings, spec: ModelSpec) -> EngineConfig:
    """What one model spec's engine is loaded with (native kernels still missing build in
    the background)."""
    from dashserve.engine.engine import EngineConfig

    options = settings.engine_options(spec)
    return EngineConfig(
        model=spec.model, dtype=options.dtype, max_model_len=options.max_model_len,
        kv_cache_gb=options.kv_cache_gb, max_num_seqs=options.max_num_seqs,
        max_num_batched_tokens=options.max_num_batched_tokens, kernels="background")


def load_engines(settings: Settings, registry: ModelRegistry) -> dict[str, EngineClient]:
    """Build one engine per model spec (loaded, then warmed up); every served name maps to
    its spec's engine. Native CPU kernels not built yet build in the background."""
    from dashserve.engine.async_engine import AsyncEngine

    report = StageReporter(registry)
    if settings.is_demo:
        report("making the demo model")
        ensure_demo_model(settings, lambda done, total: report(
            "making the demo model: layers", done, total))
    specs = settings.model_specs()
    engines: dict[str, EngineClient] = {}
    for i, spec in enumerate(specs, 1):
        prefix = f"model {i}/{len(specs)} ({spec.model}): "
        report(prefix + "loading")
        started = time.monotonic()

        def progress(stage: str, prefix: str = prefix) -> None:
            name, _, count = stage.rpartition(" ")
            if "/" in count:
                done, total = count.split("/")
                report(prefix + name, int(done), int(total))
            else:
                report(prefix + stage)

        engine = AsyncEngine.from_config(engine_config(settings, spec), progress=progress,
                                         warm_up=True)
        log.info("loaded %s in %.1f s (context %d tokens), served as %s", spec.model,
                 time.monotonic() - started, engine.model_info.max_model_len,
                 ", ".join(spec.names))
        for name in spec.names:
            engines[name] = engine
    if settings.is_demo:
        log.warning("demo model ready: its answers are gibberish by design")
    if settings.upstreams:
        engines.update(load_upstreams(settings, report))
    return engines


def load_upstreams(settings: Settings, report: StageReporter) -> dict[str, EngineClient]:
    """One pool per ``[[upstreams]]`` entry; the demo tokenizer for those naming none."""
    from dashserve.upstream.build import build_pools

    default = None
    if any(spec.tokenizer is None and spec.kind != "dashserve" for spec in settings.upstreams):
        report("making the demo model (its tokenizer serves the upstreams)")
        _ensure_demo(settings.demo_preset, settings.demo_dir, None)
        default = settings.demo_dir
    pools = build_pools(settings.upstreams, default)
    for spec in settings.upstreams:
        log.info("upstream pool %s: %s x%d (%s), served as %s", spec.name, spec.kind,
                 len(spec.urls), ", ".join(spec.urls), ", ".join(spec.names))
    return pools


def demo_banner(settings: Settings) -> str:
    served: list[str] = []
    for preset, _, demo_names in settings.demo_models():
        served.append(f"{preset} shape as:")
        served += textwrap.wrap(", ".join(demo_names), 72, initial_indent="  ",
                                subsequent_indent="  ")
    lines = [
        "DEMO MODE: no --model given.",
        "Serving RANDOM WEIGHTS (real Qwen tokenizer), the",
        *served,
        "Every answer is GIBBERISH BY DESIGN: this checks clients and wiring, not quality.",
        "Serve real weights with: dashserve serve --model DIR|HUB_ID --served-model-name NAME",
    ]
    width = max(len(line) for line in lines) + 4
    border = "#" * width
    return "\n".join([border, *(f"# {line.ljust(width - 4)} #" for line in lines), border])


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"dashserve serve: invalid settings:\n{exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level, settings.log_format)
    return serve(settings)


def serve(settings: Settings) -> int:
    """Run the server until it is stopped; 1 if the models could not be loaded."""
    failures: list[BaseException] = []
    server: DrainingServer | None = None

    def on_fatal(exc: BaseException) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    loader = (ray_loader(settings) if settings.ray.enabled
              else lambda registry: load_engines(settings, registry))
    app = build_app(settings, loader=loader, on_fatal=on_fatal,
                    on_bootstrap_key=_print_bootstrap_key)
    if settings.is_demo:
        log.warning("\n%s", demo_banner(settings))
    grace: Any = settings.shutdown_grace_s  # uvicorn types it int; any wait_for timeout works
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            log_level=settings.log_level, timeout_graceful_shutdown=grace)
    server = DrainingServer(config, app.state.registry, app.state.service)
    try:
        server.run()
    finally:
        if settings.ray.enabled:
            from dashserve.ray_serve import teardown

            teardown([])  # Ray still joined after a failed start
    return 1 if failures else 0


def build_app(settings: Settings, *, engines: Mapping[str, EngineClient] | None = None,
              loader: EngineLoader | None = None,
              on_fatal: Callable[[BaseException], None] | None = None,
              on_bootstrap_key: Callable[[str], None] | None = None) -> FastAPI:
    """The application ``serve`` runs: platform, files API, admin and metrics, over
    ``engines`` or the engines ``loader`` builds once the server is up."""
    platform = prepare_platform(settings.platform_settings(), on_bootstrap_key=on_bootstrap_key)
    return create_app(settings, engines, platform.gate, loader=loader, on_fatal=on_fatal,
                      files=file_service(settings, platform.store), platform=platform)


def ray_loader(settings: Settings) -> Callable[[ModelRegistry], dict[str, EngineClient]]:
    """Engines as Ray Serve replicas, deployed once the server is up (Ray itself starts
    here, on the main thread, whose life its local processes share)."""
    from dashserve.ray_serve import start_ray

    start_ray(settings)

    def load(registry: ModelRegistry) -> dict[str, EngineClient]:
        from dashserve.ray_serve import load_ray_engines

        if settings.is_demo:
            ensure_demo_model(settings)
        registry.detail = f"deploying {settings.ray.replicas} Ray Serve replicas per model"
        return load_ray_engines(settings)

    return load


def file_service(settings: Settings, store: Store) -> FileService:
    """The files API over the platform database and the files directory."""
    limits = FileLimits(max_file_bytes=settings.max_file_bytes,
                        max_files_per_workspace=settings.max_files_per_workspace,
                        max_bytes_per_workspace=settings.max_file_bytes_per_workspace)
    return FileService(store, LocalBlobStore(settings.files_path), limits)


def _print_bootstrap_key(secret: str) -> None:
    """A first start with no keys creates an admin key: show it once, never log it."""
    print(f"\nNo API keys yet: created one (shown only now, store it):\n  {secret}\n"  # noqa: T201
          "Use it as DASHSCOPE_API_KEY; manage keys with `dashserve keys`.\n", file=sys.stderr)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, marking the registry as draining as soon as a signal arrives
    (requests already running get ``shutdown_grace_s`` to finish). While they run the port
    stays open, so ``/health`` and new requests get 503 rather than a refused connection."""

    def __init__(self, config: uvicorn.Config, registry: ModelRegistry,
                 service: Any = None) -> None:
        super().__init__(config)
        self.registry = registry
        self.service = service  # its num_inflight is awaited before the port closes

    async def shutdown(self, sockets: Any = None) -> None:
        grace = float(self.config.timeout_graceful_shutdown or 0)
        deadline = time.monotonic() + grace
        while (self.service is not None and self.service.num_inflight > 0
               and time.monotonic() < deadline):
            await asyncio.sleep(0.05)
        self.config.timeout_graceful_shutdown = max(1, int(deadline - time.monotonic()))
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.registry.state in (ServerState.READY, ServerState.LOADING):
            self.registry.state = ServerState.DRAINING
            self.registry.detail = f"shutting down on {signal.Signals(sig).name}"
            log.info("shutting down: no new requests; requests in flight get up to %.0f s",
                     self.config.timeout_graceful_shutdown or 0)
        super().handle_exit(sig, frame)
