"""The engine knows nothing of HTTP, databases or the platform: its imports say so."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dashserve

ROOT = Path(dashserve.__file__).parent
ENGINE_SIDE = ["engine", "model", "sampling"]
FORBIDDEN = ("fastapi", "starlette", "pydantic", "sqlalchemy", "redis", "uvicorn",
             "dashserve.api", "dashserve.serving", "dashserve.platform", "dashserve.store",
             "dashserve.app", "dashserve.config")


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ENGINE_SIDE)
def test_engine_side_imports_nothing_from_the_server_side(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = {n for n in imports_of(path) if n.startswith(FORBIDDEN)}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_public_api() -> None:
    assert sorted(dashserve.__all__) == ["LLM", "SamplingParams", "StructuredOutputSpec"]
    assert dashserve.LLM.__name__ == "LLM"
