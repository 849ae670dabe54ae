"""The command line starts light: help and the small commands never import the engine or the
server stack, and the help texts say what the server does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "fastapi", "uvicorn", "starlette", "transformers", "llguidance", "numpy")

PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    from dashserve.cli import main
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            code = main(sys.argv[1:])
        except SystemExit as exc:
            code = exc.code
    print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
""")


def _probe(*argv: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("argv", [
    ("--help",), ("make-model", "--list"), ("make-model", "--help"), ("keys", "--help"),
    ("usage", "--help"), ("build-kernels", "--help"), ("serve", "--help"),
])
def test_no_heavy_imports(argv: tuple[str, ...]) -> None:
    result = _probe(*argv)
    assert result["code"] == 0
    loaded = set(result["modules"])  # type: ignore[arg-type]
    heavy = sorted(m for m in HEAVY if m in loaded) if argv[0] != "serve" else []
    assert heavy == [], f"dashserve {' '.join(argv)} imported {heavy}"
    if argv[0] in ("--help", "make-model", "build-kernels"):
        assert "sqlalchemy" not in loaded


def test_top_level_help_is_plain_text() -> None:
    out = str(_probe("--help")["out"])
    for command in ("serve", "make-model", "build-kernels", "keys", "usage", "bench"):
        assert command in out
    assert "``" not in out and "|" not in out.split("positional arguments")[0]


def test_serve_help_tells_the_truth_about_keys() -> None:
    out = " ".join(str(_probe("serve", "--help")["out"]).split())
    assert "any non-empty key" not in out
    assert "besides the keys in the database" in out
    assert "--log-format {text,json}" in out


def test_make_model_list_names_the_presets() -> None:
    out = str(_probe("make-model", "--list")["out"])
    assert "qwen3-tiny" in out and "qwen3-0.6b" in out
