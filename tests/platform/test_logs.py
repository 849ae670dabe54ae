"""platform.logs: JSON lines with extra fields such as request_id, secrets cut to a prefix."""

from __future__ import annotations

import json
import logging

from dashserve.platform.logs import JsonFormatter, redact


def test_json_lines_carry_extras_and_hide_secrets() -> None:
    secret = "sk-" + "a1" * 16
    record = logging.makeLogRecord({
        "name": "dashserve.test", "levelno": logging.INFO, "levelname": "INFO",
        "msg": "auth with %s", "args": (secret,), "request_id": "req-1", "input_tokens": 4,
    })
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert data["request_id"] == "req-1" and data["input_tokens"] == 4
    assert data["level"] == "info" and data["logger"] == "dashserve.test"
    assert secret not in line and secret[:11] in data["message"]
    assert redact("no keys here") == "no keys here"
