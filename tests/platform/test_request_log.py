"""The per-request log line (text and JSON) and request ids on uvicorn's access lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from dashserve.platform.gate import UsageRecord
from dashserve.platform.logs import (
    TEXT_FORMAT,
    JsonFormatter,
    configure_logging,
    current_request_id,
    log_request,
)

SECRET = "sk-" + "b7" * 16


def _record(**changes: object) -> UsageRecord:
    values: dict[str, object] = dict(
        request_id="req-42", key_id=None, key_prefix=SECRET[:11] + "…", workspace="ws-1",
        model="qwen-plus", input_tokens=12, output_tokens=20, cached_tokens=16,
        reasoning_tokens=0, finish_reason="stop", status_code=200, ttft_ms=123.4,
        duration_ms=2345.6, created_at=datetime.now(timezone.utc))
    values.update(changes)
    return UsageRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("dashserve.test.requests")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_text_line_has_every_field(captured: tuple[logging.Logger, io.StringIO,
                                                   logging.StreamHandler]) -> None:
    logger, stream, handler = captured
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    log_request(logger, _record(key_id="key_9f8e7d"))
    line = stream.getvalue().strip()
    for part in ("request req-42", "key=key_9f8e7d", "workspace=ws-1", "model=qwen-plus",
                 "status=200", "finish=stop", "input_tokens=12", "output_tokens=20",
                 "cached_tokens=16", "ttft_ms=123", "duration_ms=2346"):
        assert part in line, (part, line)
    assert len(stream.getvalue().splitlines()) == 1


def test_json_line_carries_fields_never_the_secret(
        captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler]) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    log_request(logger, _record(ttft_ms=None, status_code=500, finish_reason=None))
    text = stream.getvalue()
    data = json.loads(text)
    assert data["request_id"] == "req-42" and data["key"] == SECRET[:11] + "…"
    assert data["workspace"] == "ws-1" and data["model"] == "qwen-plus"
    assert (data["status_code"], data["input_tokens"], data["output_tokens"],
            data["cached_tokens"]) == (500, 12, 20, 16)
    assert data["ttft_ms"] is None and data["duration_ms"] == 2345.6
    assert "ttft_ms=-" in data["message"] and SECRET not in text


def test_access_lines_carry_the_request_id() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("info", "json")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        access = logging.getLogger("uvicorn.access")
        token = current_request_id.set("req-7")
        try:
            access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/x", "1.1", 200)
        finally:
            current_request_id.reset(token)
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/y", "1.1", 404)
        first, second = (json.loads(line) for line in stream.getvalue().splitlines())
        assert first["request_id"] == "req-7" and first["message"].endswith("request_id=req-7")
        assert first["logger"] == "uvicorn.access" and "POST /x" in first["message"]
        assert "request_id" not in second  # outside a request: nothing to add
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
