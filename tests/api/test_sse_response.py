"""SseResponse: a client's disconnect ends the body at once; nothing else is swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.background import BackgroundTask

from dashserve.api.streaming import SseResponse

SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}}


class Client:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.left = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def response(log: list[str], frames: int | None) -> SseResponse:
    async def body() -> AsyncIterator[bytes]:
        try:
            i = 0
            while frames is None or i < frames:
                yield f"data: {i}\n\n".encode()
                i += 1
                await asyncio.sleep(0.01)
        finally:
            log.append("body closed")

    async def background() -> None:
        log.append("background")

    return SseResponse(body(), media_type="text/event-stream",
                       background=BackgroundTask(background))


async def test_a_whole_stream_ends_with_its_background_task() -> None:
    log: list[str] = []
    client = Client()
    await response(log, 3)(SCOPE, client.receive, client.send)
    bodies = [m["body"] for m in client.sent if m["type"] == "http.response.body"]
    assert bodies[:3] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert log == ["body closed", "background"]
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == 1  # the watcher is gone


async def test_a_disconnect_ends_an_endless_stream_at_once() -> None:
    log: list[str] = []
    client = Client()
    task = asyncio.create_task(response(log, None)(SCOPE, client.receive, client.send))
    await asyncio.sleep(0.05)
    client.left.set()
    await asyncio.wait_for(task, 1.0)  # returns: the disconnect is not an error
    assert not task.cancelled()
    assert log == ["body closed", "background"]
    if hasattr(task, "cancelling"):
        assert task.cancelling() == 0


async def test_a_cancellation_from_elsewhere_still_cancels() -> None:
    log: list[str] = []
    client = Client()
    task = asyncio.create_task(response(log, None)(SCOPE, client.receive, client.send))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "background" not in log
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == 1  # the watcher went with it
