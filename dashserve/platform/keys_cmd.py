"""``dashserve keys create|list|revoke``: manage API keys in the store from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from dashserve.errors import DashServeError
from dashserve.platform.keys import (
    DEFAULT_WORKSPACE,
    KeyManager,
    KeySpec,
    describe_key,
    is_usable,
    now_utc,
)
from dashserve.platform.state import add_store_arguments, open_cli_store
from dashserve.platform.timespec import parse_time
from dashserve.store.repos import KeyRow


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    actions = parser.add_subparsers(dest="keys_action", required=True)
    create = actions.add_parser("create", help="Create a key and print its secret once.")
    add_store_arguments(create, on_subcommand=True)
    create.add_argument("--name", default=None)
    create.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    create.add_argument("--models", default=None, help="Comma-separated models (default: all).")
    create.add_argument("--rpm", type=int, default=None, help="Requests per minute.")
    create.add_argument("--tpm", type=int, default=None, help="Tokens (in + out) per minute.")
    create.add_argument("--concurrency", type=int, default=None, help="Requests at once.")
    create.add_argument("--expires", default=None, help="30d, 12h, 2026-12-31 or ISO time.")
    create.add_argument("--admin", action="store_true", help="Allow the admin API.")
    create.add_argument("--json", action="store_true")
    listing = actions.add_parser("list", help="List keys (never secrets).")
    add_store_arguments(listing, on_subcommand=True)
    listing.add_argument("--all", action="store_true", help="Include revoked keys.")
    listing.add_argument("--workspace", default=None)
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="Revoke a key: its next request fails.")
    add_store_arguments(revoke, on_subcommand=True)
    revoke.add_argument("key", metavar="KEY_OR_PREFIX", help="Secret, key id or visible prefix.")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except DashServeError as exc:
        sys.stderr.write(f"dashserve keys: {exc.message}\n")
        return 1


async def _run(args: argparse.Namespace) -> int:
    store = await open_cli_store(args)
    try:
        keys = KeyManager(store)
        if args.keys_action == "create":
            return await _create(keys, args)
        if args.keys_action == "list":
            return await _list(keys, args)
        row = await keys.revoke(args.key)
        sys.stdout.write(f"Revoked {row.id} ({row.prefix}).\n")
        return 0
    finally:
        await store.close()


def spec_from_args(args: argparse.Namespace) -> KeySpec:
    models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
    expires = parse_time(args.expires, future=True, param="expires") if args.expires else None
    return KeySpec(
        name=args.name, workspace=args.workspace, allowed_models=models or None, rpm=args.rpm,
        tpm=args.tpm, max_concurrency=args.concurrency, expires_at=expires, is_admin=args.admin,
    )


async def _create(keys: KeyManager, args: argparse.Namespace) -> int:
    issued = await keys.create(spec_from_args(args))
    if args.json:
        sys.stdout.write(json.dumps({**describe_key(issued.key), "secret": issued.secret}) + "\n")
        return 0
    key = issued.key
    sys.stdout.write(
        f"Created key {key.id} ({key.prefix}) in workspace {key.workspace}.\n"
        "Secret (shown only now, store it safely):\n"
        f"{issued.secret}\n"
    )
    return 0


_COLUMNS = (
    "prefix", "id", "name", "workspace", "models", "rpm", "tpm", "conc", "last_used", "status"
)


def _cells(key: KeyRow) -> list[str]:
    status = "active" if is_usable(key, now_utc()) else "revoked" if key.revoked_at else "expired"
    if key.is_admin:
        status += ",admin"
    limits = [str(v) if v is not None else "-" for v in (key.rpm, key.tpm, key.max_concurrency)]
    last = key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never"
    models = ",".join(key.allowed_models) if key.allowed_models else "*"
    return [key.prefix, key.id, key.name or "", key.workspace, models, *limits, last, status]


async def _list(keys: KeyManager, args: argparse.Namespace) -> int:
    rows = await keys.list_keys(include_revoked=args.all, workspace=args.workspace)
    if args.json:
        sys.stdout.write(json.dumps([describe_key(r) for r in rows]) + "\n")
        return 0
    sys.stdout.write(format_table(list(_COLUMNS), [_cells(r) for r in rows]))
    return 0


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in [[h.upper() for h in header], *rows]]
    return "\n".join(lines) + "\n"
