"""Log set-up (text or JSON lines), the per-request line, and request ids in every access line;
secrets never appear."""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dashserve.platform.gate import UsageRecord

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


# The id of the HTTP request being handled (set by the app's request-id middleware), so that
# log lines written while handling it, uvicorn's access line included, can carry it.
current_request_id: ContextVar[str | None] = ContextVar("dashserve_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _AccessRequestId(logging.Filter):
    """Adds the request id to uvicorn's access lines (text and JSON)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
            record.msg = f"{record.msg} request_id=%s"
            record.args = (*(record.args or ()), request_id)
        return True


def configure_logging(level: int | str = logging.INFO, fmt: str = "text") -> None:
    """One handler on the root logger for every logger (dashserve's and uvicorn's): text
    lines, or JSON lines with ``fmt="json"``; uvicorn's access lines carry the request id."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _AccessRequestId) for f in access.filters):
        access.addFilter(_AccessRequestId())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # through the root handler
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)  # the root's level (uvicorn's own config may have set one)


def log_request(logger: logging.Logger, record: UsageRecord) -> None:
    """The one line every finished request leaves: ids (the key's id or visible prefix, never
    its secret), model, status, tokens and timings; the same values as JSON fields."""
    key = record.key_id or record.key_prefix
    ttft = None if record.ttft_ms is None else round(record.ttft_ms, 1)
    fields: dict[str, Any] = {
        "request_id": record.request_id, "key": key, "workspace": record.workspace,
        "model": record.model, "status_code": record.status_code,
        "finish_reason": record.finish_reason, "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens, "cached_tokens": record.cached_tokens,
        "reasoning_tokens": record.reasoning_tokens, "ttft_ms": ttft,
        "duration_ms": round(record.duration_ms, 1),
    }
    logger.info(
        "request %s key=%s workspace=%s model=%s status=%d finish=%s input_tokens=%d "
        "output_tokens=%d cached_tokens=%d ttft_ms=%s duration_ms=%.0f",
        record.request_id, redact(key), record.workspace or "-", record.model,
        record.status_code, record.finish_reason or "-", record.input_tokens,
        record.output_tokens, record.cached_tokens, "-" if ttft is None else f"{ttft:.0f}",
        record.duration_ms, extra=fields,
    )
