"""Structured (JSON-lines) log records that carry request ids and never secrets."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

# Attributes every LogRecord has; anything else was passed through ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SECRET = re.compile(r"sk-[A-Za-z0-9]{8}[A-Za-z0-9]+")


def redact(text: str) -> str:
    """Cut any ``sk-`` secret down to its visible prefix."""
    return _SECRET.sub(lambda m: m.group(0)[:11] + "…", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                plain = isinstance(value, (int, float, bool, type(None)))
                data[name] = value if plain else str(value)
        if record.exc_info:
            data["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False)


def configure_json_logging(level: int | str = logging.INFO) -> None:
    """Send the ``dashserve`` loggers to stderr as JSON lines (for ``serve --log-format json``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("dashserve")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
