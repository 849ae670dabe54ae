"""Command line: ``dashserve serve | make-model | build-kernels | keys | usage | bench |
engine-serve``; each subcommand lives in its own module, imported only when that subcommand
runs (so ``--help`` and the small commands start without torch or the server stack)."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module exposing add_arguments(parser) and run(args) -> int
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("dashserve.serve_cmd", "Start the DashScope-compatible server."),
    "make-model": ("dashserve.model.make", "Write a random-weight Qwen checkpoint directory."),
    "build-kernels": ("dashserve.model.kernel_build",
                      "Compile the native CPU kernels for this machine and environment."),
    "keys": ("dashserve.platform.keys_cmd", "Create, list and revoke API keys."),
    "usage": ("dashserve.platform.usage_cmd", "Report usage records."),
    "bench": ("dashserve.benchmark.cmd", "Benchmark a running server."),
    "engine-serve": ("dashserve.engine_serve_cmd",
                     "Serve one engine over the token-id wire, for a front in another process."),
}

DESCRIPTION = "dashserve: a self-hosted server for the DashScope API on its own Qwen engine."


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is one), if any."""
    for word in argv:
        if word in SUBCOMMANDS:
            return word
        if not word.startswith("-"):
            return None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` (all of them when ``argv`` is None)
    gets its module imported and its arguments added."""
    parser = argparse.ArgumentParser(prog="dashserve", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv) if argv is not None else None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if argv is not None and name != chosen:
            continue
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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        print(f"dashserve: '{args.command}' is not available", file=sys.stderr)  # noqa: T201
        return 2
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
