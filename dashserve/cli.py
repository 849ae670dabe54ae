"""Command line: ``dashserve serve | make-model | keys | usage | bench``; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module exposing add_arguments(parser) and run(args) -> int
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("dashserve.serve_cmd", "Start the DashScope-compatible server."),
    "make-model": ("dashserve.model.make", "Write a random-weight Qwen checkpoint directory."),
    "keys": ("dashserve.platform.keys_cmd", "Create, list and revoke API keys."),
    "usage": ("dashserve.platform.usage_cmd", "Report usage records."),
    "bench": ("dashserve.benchmark.cmd", "Benchmark a running server."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dashserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a subcommand whose module is not built yet
            if exc.name != module_name:
                raise
            continue
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        print(f"dashserve: '{args.command}' is not available", file=sys.stderr)  # noqa: T201
        return 2
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
