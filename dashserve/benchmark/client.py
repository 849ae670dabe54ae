"""Streaming clients: one timed request against the compatible-mode or native DashScope API."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

NATIVE_PATH = "/api/v1/services/aigc/text-generation/generation"
COMPAT_PATH = "/chat/completions"
_ERROR_TEXT_LIMIT = 300


@dataclass
class RequestResult:
    """What one request measured. Times are seconds from the moment it was sent."""

    ok: bool = False
    error: str | None = None
    ttft_s: float | None = None
    e2e_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    usage_reported: bool = False
    chunks: int = 0  # token-bearing chunks
    finish_reason: str | None = None


class _Timer:
    """Collects token-bearing chunk times and turns them into TTFT and inter-token gaps."""

    def __init__(self, result: RequestResult) -> None:
        self.result = result
        self.started = time.perf_counter()
        self.last: float | None = None

    def tokens(self, count: int | None) -> None:
        """A chunk with output arrived, carrying ``count`` tokens (None: unknown, one)."""
        now = time.perf_counter() - self.started
        res = self.result
        res.chunks += 1
        if self.last is None:
            res.ttft_s = now
        else:
            k = max(1, count or 1)
            res.itl_s.extend([(now - self.last) / k] * k)
        self.last = now

    def finish(self) -> None:
        self.result.e2e_s = time.perf_counter() - self.started


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) for each SSE event; comments, ids and status lines are skipped."""
    event = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        key, _, value = line.partition(":")
        if key == "data":
            data.append(value[1:] if value.startswith(" ") else value)
        elif key == "event":
            event = value.strip()
    if data:
        yield event, "\n".join(data)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT] + "..."


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


async def _send(http: httpx.AsyncClient, url: str, body: dict[str, Any],
                headers: dict[str, str], handler: Any) -> RequestResult:
    """POST ``body`` and feed the event stream to ``handler(event, data, timer) -> bool``
    (True: stop reading). Transport errors and non-200 replies become failed results."""
    result = RequestResult()
    timer = _Timer(result)
    try:
        async with http.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode("utf-8", errors="replace")
                result.error = f"HTTP {response.status_code}: {_short(text)}"
            else:
                async for event, data in sse_events(response):
                    if handler(event, data, timer):
                        break
    except (httpx.HTTPError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {_short(str(exc)) or 'transport error'}"
    timer.finish()
    if result.error is None and result.finish_reason is None:
        result.error = "the stream ended without a finish reason"
    result.ok = result.error is None
    if not result.usage_reported:
        result.output_tokens = result.chunks
    return result


def _compat_handler(event: str, data: str, timer: _Timer) -> bool:
    res = timer.result
    if data.strip() == "[DONE]":
        return True
    try:
        chunk = json.loads(data)
    except ValueError:
        res.error = f"not JSON in the stream: {_short(data)}"
        return True
    if not isinstance(chunk, dict):
        return False
    if chunk.get("error"):
        res.error = f"error in the stream: {_short(json.dumps(chunk['error']))}"
        return True
    usage = chunk.get("usage")
    if isinstance(usage, dict) and _int(usage.get("completion_tokens")) is not None:
        res.usage_reported = True
        res.output_tokens = _int(usage.get("completion_tokens")) or 0
        res.prompt_tokens = _int(usage.get("prompt_tokens"))
        details = usage.get("prompt_tokens_details") or {}
        res.cached_tokens = _int(details.get("cached_tokens")) if details else None
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        calls = delta.get("tool_calls") or ()
        args = "".join(((c.get("function") or {}).get("arguments") or "") for c in calls)
        if delta.get("content") or delta.get("reasoning_content") or args:
            timer.tokens(None)
        if choice.get("finish_reason"):
            res.finish_reason = str(choice["finish_reason"])
    return False


class _NativeHandler:
    """Native frames carry running usage totals, so each chunk's token count is known."""

    def __init__(self) -> None:
        self.counted = 0

    def __call__(self, event: str, data: str, timer: _Timer) -> bool:
        res = timer.result
        try:
            chunk = json.loads(data)
        except ValueError:
            res.error = f"not JSON in the stream: {_short(data)}"
            return True
        if event == "error" or (isinstance(chunk, dict) and chunk.get("code")):
            res.error = f"error event: {_short(data)}"
            return True
        usage = chunk.get("usage") or {}
        out = _int(usage.get("output_tokens"))
        if out is not None:
            res.usage_reported = True
            res.output_tokens = out
            res.prompt_tokens = _int(usage.get("input_tokens"))
            details = usage.get("prompt_tokens_details") or {}  # left out when nothing cached
            res.cached_tokens = _int(details.get("cached_tokens")) or 0
        output = chunk.get("output") or {}
        for choice in output.get("choices") or ():
            self._choice(choice, out, timer)
        if output.get("text"):
            self._bearing(out, timer)
        finish = output.get("finish_reason")
        if finish and finish != "null":
            res.finish_reason = str(finish)
        return False

    def _choice(self, choice: dict[str, Any], out: int | None, timer: _Timer) -> None:
        message = choice.get("message") or {}
        content = message.get("content")
        if isinstance(content, list):  # multimodal parts
            content = "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
        calls = message.get("tool_calls") or ()
        args = "".join(((c.get("function") or {}).get("arguments") or "") for c in calls)
        if content or message.get("reasoning_content") or args:
            self._bearing(out, timer)
        finish = choice.get("finish_reason")
        if finish and finish != "null":
            timer.result.finish_reason = str(finish)

    def _bearing(self, out: int | None, timer: _Timer) -> None:
        count = None if out is None else out - self.counted
        if out is not None:
            self.counted = out
        timer.tokens(count)


def native_root(base_url: str) -> str:
    """The server root for native paths; a DashScope SDK style ``.../api/v1`` is accepted."""
    root = base_url.rstrip("/")
    return root[: -len("/api/v1")] if root.endswith("/api/v1") else root


def _headers(api_key: str | None, native: bool) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if native:
        headers["X-DashScope-SSE"] = "enable"
    return headers


async def stream_compat(http: httpx.AsyncClient, base_url: str, model: str,
                        messages: list[dict[str, Any]], *, max_tokens: int,
                        temperature: float, api_key: str | None = None,
                        extra_body: dict[str, Any] | None = None) -> RequestResult:
    """One streaming ``POST {base_url}/chat/completions`` (OpenAI-compatible servers)."""
    body = {"model": model, "messages": messages, "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": max_tokens,
            "temperature": temperature, **(extra_body or {})}
    url = base_url.rstrip("/") + COMPAT_PATH
    return await _send(http, url, body, _headers(api_key, False), _compat_handler)


async def stream_native(http: httpx.AsyncClient, base_url: str, model: str,
                        messages: list[dict[str, Any]], *, max_tokens: int,
                        temperature: float, api_key: str | None = None,
                        extra_body: dict[str, Any] | None = None) -> RequestResult:
    """One streaming native DashScope text-generation request (incremental output)."""
    params = {"incremental_output": True, "result_format": "message",
              "max_tokens": max_tokens, "temperature": temperature}
    body: dict[str, Any] = {"model": model, "input": {"messages": messages},
                            "parameters": params}
    for key, value in (extra_body or {}).items():  # anything but the envelope is a parameter
        if key == "parameters" and isinstance(value, dict):
            params.update(value)
        elif key in ("model", "input"):
            body[key] = value
        else:
            params[key] = value
    url = native_root(base_url) + NATIVE_PATH
    return await _send(http, url, body, _headers(api_key, True), _NativeHandler())
