"""``dashserve engine-serve``: one engine (loaded as ``serve`` loads it) on the token-id wire.

A DashScope front (``dashserve serve``) in another process or on another machine reaches it
with ``RemoteEngineClient``. It listens on loopback by default; on any other address give a
shared secret (``--secret`` or env ``DASHSERVE_ENGINE_SECRET``) that the front sends too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import uvicorn
from pydantic import ValidationError

from dashserve.config import ModelSpec, Settings
from dashserve.platform.logs import configure_logging
from dashserve.upstream.engine_server import SECRET_ENV

log = logging.getLogger("dashserve.engine_serve")

DEFAULT_PORT = 8100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", metavar="DIR|HUB_ID",
        help="checkpoint to serve; none: the random-weight text demo model")
    add("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    add("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    add("--secret", help=f"bearer token every request must carry (env {SECRET_ENV})")
    add("--data-dir", help="where the demo model is cached")
    add("--dtype", help="weight dtype: auto, bfloat16, float16, float32")
    add("--max-model-len", type=int, help="context length limit in tokens")
    add("--kv-cache-gb", type=float, help="KV cache size in GiB")
    add("--max-num-seqs", type=int, help="most sequences decoded together")
    add("--max-num-batched-tokens", type=int, help="token budget of one engine step")
    add("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Engine settings from the flags (env and a config file fill the rest, as for serve)."""
    values: dict[str, Any] = {name: getattr(args, name) for name in (
        "data_dir", "dtype", "max_model_len", "kv_cache_gb", "max_num_seqs",
        "max_num_batched_tokens") if getattr(args, name, None) is not None}
    if args.model:
        values["models"] = [ModelSpec(model=args.model)]
    return Settings(demo_vl_preset=None, **values)


def run(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get(SECRET_ENV) or None
    if secret is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print("dashserve engine-serve: a non-loopback --host needs --secret "  # noqa: T201
              f"(or {SECRET_ENV})", file=sys.stderr)
        return 2
    try:
        settings = settings_from_args(args)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"dashserve engine-serve: invalid settings:\n{exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(args.log_level, settings.log_format)
    app = build_app(settings, secret)
    log.info("engine-serve listening on http://%s:%d", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, log_level=args.log_level,
                access_log=False)
    return 0


def build_app(settings: Settings, secret: str | None) -> Any:
    """Load the (first) configured model and wrap it in the wire's ASGI app."""
    from dashserve.engine.async_engine import AsyncEngine
    from dashserve.serve_cmd import engine_config, ensure_demo_model
    from dashserve.upstream.engine_server import EngineServer, tokenizer_files

    if settings.is_demo:
        ensure_demo_model(settings)
    spec = settings.model_specs()[0]
    engine = AsyncEngine.from_config(engine_config(settings, spec), warm_up=True)
    log.info("loaded %s (context %d tokens)", spec.model, engine.model_info.max_model_len)
    return EngineServer(engine, tokenizer_files(engine.engine.model_dir), secret).app(
        owns_engine=True)
