"""A loopback HTTP server for fetch tests: fixed bodies, redirects, chunked and slow answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up early (byte caps, timeouts) are expected here."""


class MediaServer:
    """Serves ``routes`` (path → bytes); ``/redirect?to=URL`` answers 302 to URL;
    ``/chunked/N`` streams N bytes without a length; ``/slow`` waits before answering.
    ``hosts`` records the ``Host`` header of each request."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.hosts: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.hosts.append(self.headers.get("Host", ""))
                path = self.path
                if path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", path.split("=", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path.startswith("/chunked/"):
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    left = int(path.rsplit("/", 1)[1])
                    while left > 0:
                        n = min(left, 8192)
                        self.wfile.write(b"%x\r\n" % n + b"x" * n + b"\r\n")
                        left -= n
                    self.wfile.write(b"0\r\n\r\n")
                elif path == "/slow":
                    time.sleep(2.0)
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                elif path in server.routes:
                    body, kind = server.routes[path]
                    self.send_response(200)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path


@contextmanager
def media_server() -> Iterator[MediaServer]:
    server = MediaServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
