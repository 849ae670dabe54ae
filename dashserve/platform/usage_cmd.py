"""``dashserve usage``: usage totals by day, model, key or workspace, or the latest records."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from dashserve.errors import DashServeError
from dashserve.platform.keys_cmd import format_table
from dashserve.platform.reports import (
    COUNTS,
    UsageQuery,
    recent_records,
    resolve_key_ref,
    usage_report,
)
from dashserve.platform.state import add_store_arguments, open_cli_store
from dashserve.platform.timespec import parse_time
from dashserve.store import repos


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("--key", default=None, help="Key id, visible prefix or static key name.")
    parser.add_argument("--model", default=None)
    parser.add_argument("--workspace", default=None)
    parser.add_argument("--since", default=None, help="7d, 24h, 2026-11-01 or an ISO time.")
    parser.add_argument("--by", choices=repos.GROUPINGS, default="day")
    parser.add_argument("--records", type=int, default=None, metavar="N",
                        help="Show the N newest records instead of totals.")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except DashServeError as exc:
        sys.stderr.write(f"dashserve usage: {exc.message}\n")
        return 1


async def _run(args: argparse.Namespace) -> int:
    store = await open_cli_store(args)
    try:
        since = parse_time(args.since, future=False, param="since") if args.since else None
        key = await resolve_key_ref(store, args.key)
        if args.records is not None:
            rows = await recent_records(
                store, limit=args.records, key=key, model=args.model, workspace=args.workspace,
                since=since,
            )
            columns = ["created_at", "request_id", "key_prefix", "workspace", "model",
                       "input_tokens", "output_tokens", "finish_reason", "status_code"]
        else:
            query = UsageQuery(by=args.by, since=since, key=key, model=args.model,
                               workspace=args.workspace)
            rows = await usage_report(store, query)
            group = ["key_prefix", "key_id"] if args.by == "key" else [args.by]
            columns = [*group, *COUNTS, "total_tokens"]
    finally:
        await store.close()
    if args.json:
        sys.stdout.write(json.dumps(rows) + "\n")
    else:
        sys.stdout.write(format_table(columns, [[_cell(r.get(c)) for c in columns] for r in rows]))
    return 0


def _cell(value: object) -> str:
    return "-" if value is None else str(value)
