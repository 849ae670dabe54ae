"""``dashserve bench serve``: benchmark a running server from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

import httpx

from dashserve.benchmark.report import format_table
from dashserve.benchmark.runner import APIS, BenchConfig, run_sweep

log = logging.getLogger(__name__)

_EXAMPLE = """examples:
  dashserve bench serve --base-url http://127.0.0.1:8000/compatible-mode/v1 --clients 1 4 16
  dashserve bench serve --api dashscope --base-url http://127.0.0.1:8000 --api-key sk-x
  dashserve bench serve --base-url http://127.0.0.1:8090/v1 --extra-body '{"ignore_eos": true}'
"""


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add("--base-url", default=None, help="compat: the /v1 root (default "
        "http://127.0.0.1:8000/compatible-mode/v1); dashscope: the server root "
        "(default http://127.0.0.1:8000)")
    add("--api", choices=APIS, default="compat", help="protocol to speak (default compat)")
    add("--model", help="model name (default: the first model the server lists)")
    add("--api-key", help="sent as 'Authorization: Bearer KEY'")
    add("--clients", type=int, nargs="+", default=[1], metavar="N",
        help="concurrent closed-loop clients; several values run in turn (default 1)")
    add("--num-requests", type=int, metavar="N",
        help="requests per run (default 4 x clients; never fewer than clients)")
    add("--duration", type=float, metavar="S", help="stop starting requests after S seconds")
    add("--prompt-tokens", type=int, default=256, help="user message length (default 256)")
    add("--output-tokens", type=int, default=128, help="max_tokens per request (default 128)")
    add("--shared-prefix-tokens", type=int, default=0, metavar="K",
        help="add a system prompt of K tokens shared by every request")
    add("--temperature", type=float, default=0.0)
    add("--seed", type=int, default=0, help="prompt seed (default 0)")
    add("--extra-body", type=json.loads, default={}, metavar="JSON",
        help="object merged into each request body (dashscope: into parameters)")
    add("--no-warmup", action="store_true", help="skip the untimed warm-up request")
    add("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    add("--tokenizer", help="directory with tokenizer.json for exact prompt lengths "
        "(default: the bundled Qwen3 tokenizer)")
    add("--label", help="name of this server in the table and JSON")
    add("--json", type=Path, metavar="PATH", help="write results and arguments as JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", required=True)
    serve = sub.add_parser("serve", help="closed-loop streaming load against a running server",
                           description="Drive a running server with concurrent streaming "
                           "clients and report throughput and latency.", epilog=_EXAMPLE,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _serve_arguments(serve)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    base_url = args.base_url or ("http://127.0.0.1:8000/compatible-mode/v1"
                                 if args.api == "compat" else "http://127.0.0.1:8000")
    if not isinstance(args.extra_body, dict):
        raise ValueError("--extra-body must be a JSON object")
    return BenchConfig(
        base_url=base_url, api=args.api, model=args.model, api_key=args.api_key,
        clients=args.clients[0], num_requests=args.num_requests, duration_s=args.duration,
        prompt_tokens=args.prompt_tokens, output_tokens=args.output_tokens,
        shared_prefix_tokens=args.shared_prefix_tokens, temperature=args.temperature,
        seed=args.seed, extra_body=args.extra_body, warmup=not args.no_warmup,
        timeout_s=args.timeout, tokenizer=args.tokenizer, label=args.label,
    )


def run(args: argparse.Namespace) -> int:
    if args.bench_command != "serve":
        return 2
    try:
        config = config_from_args(args)
        results = asyncio.run(run_sweep(config, args.clients))
    except (ValueError, httpx.HTTPError, OSError) as exc:
        sys.stderr.write(f"dashserve bench: {exc}\n")
        return 2
    sys.stdout.write(format_table(results) + "\n")
    if args.json is not None:
        arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if not k.startswith("_") and k != "api_key"}
        payload = {"arguments": arguments, "results": [r.to_dict() for r in results]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", "utf-8")
    failed_runs = [r for r in results if r.completed == 0]
    return 1 if failed_runs else 0
