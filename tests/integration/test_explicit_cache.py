"""Explicit cache (``cache_control`` markers) end to end: real engine, live server, real SDKs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashserve.engine.async_engine import AsyncEngine
from tests.integration.conftest import API_KEY, LiveServer, start_server

MODEL = "qwen3-0.6b"
# about 1,500 tokens: over DashScope's 1,024-token minimum for an explicit cache
DOCUMENT = " ".join(f"clause {i} of the handbook says rule {i * 7 % 13} applies." for i in range(120))


@pytest.fixture(scope="module")
def real(qwen3_tiny_dir: Path) -> Iterator[tuple[LiveServer, AsyncEngine]]:
    engine = AsyncEngine.from_pretrained(str(qwen3_tiny_dir), dtype="fp32", max_model_len=4096)
    server = start_server({MODEL: engine})  # type: ignore[dict-item]
    yield server, engine
    server.stop()


def _chat(server: LiveServer, document: str, question: str, marker: Any = None) -> Any:
    import openai

    part: dict[str, Any] = {"type": "text", "text": document}
    if marker is not None:
        part["cache_control"] = marker
    client = openai.OpenAI(api_key=API_KEY, base_url=server.compat_url, max_retries=0)
    return client.chat.completions.create(
        model=MODEL, max_tokens=4,
        messages=[{"role": "system", "content": [part]}, {"role": "user", "content": question}])


def test_marked_prefix_is_created_once_then_served_from_the_pinned_cache(
        real: tuple[LiveServer, AsyncEngine]) -> None:
    server, engine = real
    doc = "First copy. " + DOCUMENT
    first = _chat(server, doc, "Which rule applies?", {"type": "ephemeral"})
    details = first.usage.prompt_tokens_details.model_dump()
    created = details["cache_creation_input_tokens"]
    assert details["cache_type"] == "ephemeral" and details["cached_tokens"] == 0
    assert created >= 1024 and created % 16 == 0  # whole KV blocks of the marked prefix
    assert details["cache_creation"] == {"ephemeral_5m_input_tokens": created}
    assert engine.stats().num_kv_blocks_pinned == created // 16

    second = _chat(server, doc, "And the next one?", {"type": "ephemeral"})
    again = second.usage.prompt_tokens_details.model_dump()
    assert again["cached_tokens"] >= created and again["cache_creation_input_tokens"] == 0
    assert engine.stats().num_kv_blocks_pinned == created // 16  # renewed, not duplicated


def test_native_api_reports_the_explicit_cache(real: tuple[LiveServer, AsyncEngine]) -> None:
    server, _ = real
    body = {"model": MODEL, "parameters": {"result_format": "message", "max_tokens": 4},
            "input": {"messages": [
                {"role": "system", "content": [{"text": "Native copy. " + DOCUMENT,
                                                "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [{"text": "hi"}]}]}}
    r = httpx.post(server.native_url + "/services/aigc/text-generation/generation", json=body,
                   headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert r.status_code == 200, r.text
    details = r.json()["usage"]["prompt_tokens_details"]
    assert details["cache_type"] == "ephemeral" and details["cache_creation_input_tokens"] >= 1024


def test_short_marked_prefix_is_not_cached(real: tuple[LiveServer, AsyncEngine]) -> None:
    server, _ = real
    usage = _chat(server, "A short system prompt.", "hi", {"type": "ephemeral"}).usage
    details = usage.prompt_tokens_details.model_dump()
    assert details["cache_type"] == "ephemeral" and details["cache_creation_input_tokens"] == 0


def test_unknown_marker_type_is_refused(real: tuple[LiveServer, AsyncEngine]) -> None:
    import openai

    server, _ = real
    with pytest.raises(openai.BadRequestError) as err:
        _chat(server, "text", "hi", {"type": "persistent"})
    assert "cache_control" in str(err.value)


def _native(server: LiveServer, workspace: str, system: Any, question: str) -> dict[str, Any]:
    body = {"model": MODEL, "parameters": {"result_format": "message", "max_tokens": 2},
            "input": {"messages": [{"role": "system", "content": system},
                                   {"role": "user", "content": question}]}}
    r = httpx.post(server.native_url + "/services/aigc/text-generation/generation", json=body,
                   headers={"Authorization": f"Bearer {API_KEY}",
                            "X-DashScope-WorkSpace": workspace}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["usage"]


def _cached(usage: dict[str, Any]) -> int:
    return (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)


def test_prefix_cache_is_partitioned_by_workspace(real: tuple[LiveServer, AsyncEngine]) -> None:
    server, _ = real
    doc = "Tenant copy. " + DOCUMENT
    assert _cached(_native(server, "ws-a", doc, "first")) == 0
    assert _cached(_native(server, "ws-a", doc, "second")) >= 1024  # same workspace: reused
    assert _cached(_native(server, "ws-b", doc, "first")) == 0  # another workspace: not


def test_explicit_pins_stay_per_workspace(real: tuple[LiveServer, AsyncEngine]) -> None:
    server, _ = real
    marked = [{"text": "Pinned copy. " + DOCUMENT, "cache_control": {"type": "ephemeral"}}]
    a = _native(server, "ws-a", marked, "q")["prompt_tokens_details"]
    b = _native(server, "ws-b", marked, "q")["prompt_tokens_details"]
    assert a["cache_creation_input_tokens"] >= 1024
    assert b["cache_creation_input_tokens"] == a["cache_creation_input_tokens"]
    assert b["cached_tokens"] == 0


def test_shared_prefix_cache_serves_every_workspace(qwen3_tiny_dir: Path) -> None:
    engine = AsyncEngine.from_pretrained(str(qwen3_tiny_dir), dtype="fp32", max_model_len=4096)
    server = start_server({MODEL: engine}, share_prefix_cache=True)  # type: ignore[dict-item]
    try:
        doc = "Shared copy. " + DOCUMENT
        assert _cached(_native(server, "ws-a", doc, "first")) == 0
        assert _cached(_native(server, "ws-b", doc, "first")) >= 1024
    finally:
        server.stop()
