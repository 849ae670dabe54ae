"""Imports only point down: every import of every module is checked against one table.

The table below is the layering of the package, bottom first. A module belongs to the longest
key of ``ALLOWED`` that names it or a package above it; it may import its own unit and the
units its row lists, nothing else. Every import counts: top-level, inside functions and under
``TYPE_CHECKING`` alike. The table itself must stay acyclic, so no arrow can point back up.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import dashserve

ROOT = Path(dashserve.__file__).parent

ALLOWED: dict[str, set[str]] = {
    # the bottom: the error tree, and leaves that know nothing of requests
    "errors": set(),
    "netguard": set(),
    "compact_json": set(),
    "tokenizer_build": set(),
    "chat_templates": {"tokenizer_build"},
    "tokenizer_pieces": {"tokenizer_build"},
    "tokenizer": {"chat_templates", "errors", "tokenizer_build", "tokenizer_pieces"},
    # shared contracts: what crosses from serving into the engine and back
    "contracts": {"errors", "tokenizer"},
    # the engine side: tokens and tensors, no HTTP, no database
    "model": {"contracts", "tokenizer_build"},  # contracts: token counts shared with serving
    "sampling": {"contracts", "errors"},
    "engine": {"contracts", "errors", "model", "sampling", "tokenizer"},
    # inputs turned into tensors and bytes
    "multimodal": {"contracts", "errors"},
    "media": {"errors", "netguard"},
    # persistence and business rules, beside the request path
    "store": {"errors"},
    "platform": {"contracts", "errors", "store"},
    "search": {"errors", "netguard", "platform"},
    "inspection.header": {"errors"},
    "inspection.rules": {"errors"},
    # protocol-neutral request handling: the only place platform meets the engine's contracts
    "serving": {"contracts", "errors", "inspection.header", "media", "multimodal", "platform",
                "sampling", "search", "tokenizer"},
    # the guard model runs prompts through serving's registry and prompt builder
    "inspection": {"contracts", "errors", "inspection.header", "inspection.rules", "serving"},
    # the front's clients of engines elsewhere: other processes, upstream servers, replicas
    "upstream.config": set(),
    "upstream": {"compact_json", "contracts", "engine", "errors", "tokenizer",
                 "upstream.config"},
    "config": {"inspection", "platform", "search", "upstream.config"},
    # HTTP adapters over serving (the files API shows file rows as the store keeps them)
    "api": {"compact_json", "config", "contracts", "errors", "inspection.header", "inspection.rules", "media",
            "platform", "search", "serving", "store"},
    "console": set(),
    # assembly and entry points
    "app": {"api", "config", "console", "contracts", "inspection", "media", "netguard",
            "platform", "search", "serving"},
    "llm": {"contracts", "engine"},
    "benchmark": {"tokenizer", "tokenizer_build"},
    "serve_cmd": {"api", "app", "config", "contracts", "engine", "model", "platform",
                  "serving", "store", "ray_serve", "upstream", "upstream.config"},
    # engine replicas on Ray Serve, reached through the token-id wire
    "ray_serve": {"config", "contracts", "engine", "errors", "upstream"},
    "engine_serve_cmd": {"config", "engine", "platform", "serve_cmd", "upstream"},
    "cli": set(),  # imports each subcommand by name, at run time
    "__main__": {"cli"},
    "__init__": {"contracts", "llm"},
}

# Third-party packages the engine side and the contracts never import.
SERVER_LIBRARIES = ("fastapi", "starlette", "pydantic", "sqlalchemy", "redis", "uvicorn",
                    "httpx", "alembic")
ENGINE_SIDE = ["contracts", "engine", "model", "sampling"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def unit_of(name: str) -> str | None:
    """The row of ``ALLOWED`` that ``name`` (relative to ``dashserve``) belongs to."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in ALLOWED:
            return key
    return None


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, wherever it stands."""
    return imports_in(path.read_text("utf-8"), module_name(path), path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = ["dashserve", *package[: len(package) - node.level + 1]]
                yield node.lineno, ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.lineno, node.module


def modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_every_module_has_a_row() -> None:
    missing = [str(p.relative_to(ROOT)) for p in modules() if unit_of(module_name(p)) is None]
    assert not missing, f"place these modules in the layering table: {missing}"


def test_the_table_has_no_cycle() -> None:
    graph = {unit: {d for d in deps if d != unit} for unit, deps in ALLOWED.items()}
    for unit, deps in graph.items():
        assert deps <= ALLOWED.keys(), f"{unit} lists unknown units {deps - ALLOWED.keys()}"
        parent = unit.rpartition(".")[0]
        if parent:  # a sub-unit sits below its package: the package may import it
            assert unit in ALLOWED[parent], f"{parent} must list its sub-unit {unit}"
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"the layering table has a cycle: {exc.args[1]}")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_table(path: Path) -> None:
    unit = unit_of(module_name(path))
    assert unit is not None
    bad = []
    for line, name in imports_of(path):
        if name != "dashserve" and not name.startswith("dashserve."):
            continue
        target = unit_of(name.removeprefix("dashserve").lstrip(".") or "__init__")
        if target is None or (target != unit and target not in ALLOWED[unit]
                              and not target.startswith(unit + ".")):
            bad.append(f"line {line}: {name} ({unit} -> {target})")
    assert not bad, f"{path.relative_to(ROOT)} imports upward or sideways: {bad}"


@pytest.mark.parametrize("package", ENGINE_SIDE)
def test_engine_side_imports_no_server_library(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = {n for _, n in imports_of(path) if n.split(".")[0] in SERVER_LIBRARIES}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_checker_sees_every_kind_of_import() -> None:
    """Imports inside functions, under TYPE_CHECKING and relative ones are all found."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
              "    from dashserve.serving import run\n"
              "def f():\n    from ..api import deps\n    from . import stepper\n")
    names = [n for _, n in imports_in(source, "engine.probe", is_package=False)]
    assert names == ["typing", "dashserve.serving", "dashserve.api", "dashserve.engine"]
    assert unit_of("serving.run") == "serving" and "serving" not in ALLOWED["engine"]
    assert unit_of("inspection.header") == "inspection.header"
    assert unit_of("inspection.guard") == "inspection"


def test_public_api() -> None:
    assert sorted(dashserve.__all__) == ["LLM", "SamplingParams", "StructuredOutputSpec"]
    assert dashserve.LLM.__name__ == "LLM"
