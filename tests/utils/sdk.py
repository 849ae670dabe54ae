"""The dashscope SDK pointed at a test server for the calls inside a ``with`` block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def dashscope_at(native_url: str) -> Iterator[Any]:
    """The ``dashscope`` module with its base URL set to ``native_url`` until the block ends."""
    import dashscope

    saved = dashscope.base_http_api_url
    dashscope.base_http_api_url = native_url
    try:
        yield dashscope
    finally:
        dashscope.base_http_api_url = saved
