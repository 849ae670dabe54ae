"""Small HTTP helpers for tests that talk to a server process with the standard library."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def get_json(url: str) -> tuple[int, dict[str, object]]:
    """GET ``url``: the status and the JSON body, for error statuses too."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
