"""The console's files under /console: served with their headers, on by default, off on request."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.console import STATIC_DIR
from dashserve.serve_cmd import add_arguments, settings_from_args
from tests.utils.fake_engine import FakeEngine
from tests.utils.recording_gate import RecordingGate


def client(**settings: object) -> httpx.AsyncClient:
    app = create_app(Settings(**settings), {"qwen-plus": FakeEngine()}, RecordingGate(("k",)))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_pages_and_modules_are_served() -> None:
    async with client() as c:
        r = await c.get("/console", follow_redirects=False)
        assert r.status_code in (307, 308) and r.headers["location"].endswith("/console/")
        page = await c.get("/console/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert '<script type="module" src="js/main.js">' in page.text
        js = await c.get("/console/js/main.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        css = await c.get("/console/console.css")
        assert css.headers["content-type"].startswith("text/css")
        assert (await c.get("/console/js/nothing.js")).status_code == 404
        assert (await c.get("/console/../app.py")).status_code == 404


def test_every_module_and_asset_referenced_exists() -> None:
    """Every import, script, stylesheet and icon the pages name is shipped, and nothing is
    fetched from another origin (the console works with no network beyond the server)."""
    files = [STATIC_DIR / "index.html", *sorted((STATIC_DIR / "js").glob("*.js"))]
    assert len(files) >= 9
    for path in files:
        text = path.read_text("utf-8")
        local = text.replace("http://www.w3.org", "")  # the SVG namespace, not a fetch
        assert not re.search(r"""["'(]\s*(https?:)?//""", local), path
        refs = re.findall(r"""(?:from|import\()\s*["'](\.[^"']+)["']""", text)
        refs += re.findall(r"""(?:src|href)="([^"#][^"]*)\"""", text)
        for ref in refs:
            assert (path.parent / ref).resolve().is_file(), f"{path.name} names missing {ref}"


async def test_no_console() -> None:
    async with client(console=False) as c:
        assert (await c.get("/console/")).status_code == 404
        assert (await c.get("/health")).status_code == 200


def test_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert settings_from_args(parser.parse_args([])).console is True
    assert settings_from_args(parser.parse_args(["--no-console"])).console is False
    monkeypatch.setenv("DASHSERVE_CONSOLE", "0")
    assert settings_from_args(parser.parse_args([])).console is False


def test_package_data_ships_the_files() -> None:
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text("utf-8")
    shipped = {p.relative_to(STATIC_DIR.parent.parent).parent.as_posix()
               for p in STATIC_DIR.rglob("*") if p.is_file()}
    for folder in shipped:
        assert f'"{folder}/*"' in pyproject, folder


def test_readme_screenshots_exist() -> None:
    root = Path(__file__).parents[2]
    readme = (root / "README.md").read_text("utf-8")
    shots = re.findall(r"!\[[^\]]*\]\((docs/console-[^)]+\.png)\)", readme)
    assert len(shots) == 2
    for shot in shots:
        assert (root / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot
