"""The web console: static pages and ES modules under ``/console``, calling the public APIs.

Nothing runs on the server for it beyond serving files: the pages sign in with a key kept in
the browser's ``sessionStorage`` and call the same routes as any client (chat completions,
``/admin/v1/...``, ``/metrics``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"

# Only our own files and our own API: no inline scripts, no other origin.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: an upgraded server serves its own pages
}


class ConsoleFiles(StaticFiles):
    """Static files with the console's security and caching headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_HEADERS)
        return response


def mount_console(app: FastAPI, path: str = "/console") -> None:
    """Serve the console at ``path`` (its index at ``path + '/'``)."""
    app.mount(path, ConsoleFiles(directory=STATIC_DIR, html=True), name="console")
