"""RemoteEngineClient: an EngineClient whose engine runs in another process (``engine-serve``).

The front renders prompts with the engine's own tokenizer files (fetched at connect time),
so ``input_tokens`` and ``cached_tokens`` are the engine's exact counts; images and videos
are preprocessed here and sent as their patch tensors. A lost connection
is a 503 (``ModelUnavailable``) for the request; leaving the event iterator closes the
stream, which aborts the request in the engine process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from dashserve.contracts.engine_client import ModelInfo
from dashserve.contracts.outputs import EngineEvent, EngineStats
from dashserve.contracts.request import EngineRequest
from dashserve.errors import ModelUnavailable
from dashserve.tokenizer import Tokenizer
from dashserve.upstream import token_wire as wire
from dashserve.upstream.http import HttpFailure, UpstreamHttp

log = logging.getLogger(__name__)


class EngineMismatch(RuntimeError):
    """The engine process speaks another wire version or has another tokenizer."""


def _tokenizer_from_files(files: dict[str, str], vocab_size: int) -> Tokenizer:
    with tempfile.TemporaryDirectory(prefix="dashserve-tokenizer-") as tmp:
        root = Path(tmp)
        for name, text in files.items():
            if name in wire.TOKENIZER_FILES:
                (root / name).write_text(text, "utf-8")
        (root / "config.json").write_text(f'{{"vocab_size": {int(vocab_size)}}}', "utf-8")
        tokenizer = Tokenizer.from_dir(root)
    tokenizer.prepare_for_serving()
    return tokenizer


class RemoteEngineClient:
    """Implements EngineClient over the token-id wire to one engine process at ``url``.

    Build it with ``await RemoteEngineClient.connect(url)``. Its HTTP client and its stats
    poller belong to the event loop that first uses it (connect may run on another loop).
    """

    def __init__(self, url: str, tokenizer: Tokenizer, model_info: ModelInfo,
                 tokenizer_id: str, stats: EngineStats, *, secret: str | None = None,
                 connect_timeout_s: float = 5.0, stats_interval_s: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self.tokenizer = tokenizer
        self.model_info = model_info
        self.tokenizer_id = tokenizer_id
        self._stats = stats
        self._headers = {"authorization": f"Bearer {secret}"} if secret else {}
        self._http = UpstreamHttp(connect_timeout_s=connect_timeout_s, read_timeout_s=None,
                                  max_connections=0)
        self.stats_interval_s = stats_interval_s
        self._poller: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._alive = True
        self._closed = False

    @classmethod
    async def connect(cls, url: str, *, secret: str | None = None,
                      tokenizer_id: str | None = None, timeout_s: float = 10.0,
                      stats_interval_s: float = 0.5) -> RemoteEngineClient:
        """Ask the engine process at ``url`` for its model, tokenizer and stats. Raises
        ``EngineMismatch`` when it speaks another wire version or (with ``tokenizer_id``)
        has another tokenizer, and ``aiohttp.ClientError`` when it cannot be reached (a
        ``ClientResponseError`` when it refuses, e.g. 401 for a wrong secret)."""
        headers = {"authorization": f"Bearer {secret}"} if secret else {}
        url = url.rstrip("/")
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout,
                                         trust_env=False) as http:
            info = await _get_json(http, url + "/v1/info")
            if info.get("wire") != wire.WIRE_VERSION:
                raise EngineMismatch(f"{url} speaks wire {info.get('wire')!r}, "
                                     f"this front speaks {wire.WIRE_VERSION}")
            if tokenizer_id is not None and info["tokenizer_id"] != tokenizer_id:
                raise EngineMismatch(f"{url} has another tokenizer ({info['tokenizer_id'][:12]}"
                                     f" is not {tokenizer_id[:12]})")
            files = (await _get_json(http, url + "/v1/tokenizer"))["files"]
            stats = wire.stats_from_wire(await _get_json(http, url + "/v1/stats"))
        model_info = wire.model_info_from_wire(info["model"])
        tokenizer = await asyncio.to_thread(_tokenizer_from_files, files, model_info.vocab_size)
        if wire.tokenizer_id(files) != info["tokenizer_id"]:
            raise EngineMismatch(f"{url} sent tokenizer files that do not match their id")
        return cls(url, tokenizer, model_info, info["tokenizer_id"], stats, secret=secret,
                   stats_interval_s=stats_interval_s)

    # ----- EngineClient -----------------------------------------------------------------------

    @property
    def is_alive(self) -> bool:
        """False from a lost connection until the stats poller reaches the process again."""
        return self._alive and not self._closed

    async def submit(self, request: EngineRequest) -> AsyncIterator[EngineEvent]:
        request_id, prompt_token_ids = request.request_id, request.prompt_token_ids
        params, mm_inputs = request.params, request.mm_inputs
        session = self._session()
        body: dict[str, Any] = {"request_id": request_id,
                                "prompt_token_ids": list(prompt_token_ids),
                                "params": wire.params_to_wire(params)}
        if mm_inputs:  # preprocessed here, encoded there
            body["mm_inputs"] = await asyncio.to_thread(
                lambda: [wire.mm_input_to_wire(m) for m in mm_inputs])
        try:
            async with session.post(self.url + "/v1/generate", json=body,
                                    headers=self._headers) as response:
                if response.status != 200:
                    raise _refusal(response.status, await response.read())
                async for raw in response.content:
                    line = raw.decode("utf-8").strip()
                    if not line:
                        continue
                    message = wire.decode_line(line)
                    if "error" in message:
                        raise wire.error_from_wire(message["error"])
                    event = wire.event_from_wire(message["event"])
                    yield event
                    if event.finished:
                        return
        except HttpFailure as exc:
            self._alive = False
            log.warning("engine process %s lost during %s: %s", self.url, request_id, exc)
            raise ModelUnavailable("Model is unavailable, please try again later (its engine "
                                   "process could not be reached).") from exc
        raise ModelUnavailable("Model is unavailable, please try again later (its engine "
                               "process ended the request early).")

    async def abort(self, request_id: str) -> None:
        with contextlib.suppress(*HttpFailure):
            async with self._session().post(self.url + "/v1/abort", headers=self._headers,
                                            json={"request_id": request_id}) as response:
                await response.read()

    def stats(self) -> EngineStats:
        """The latest snapshot (refreshed every ``stats_interval_s`` while a loop runs)."""
        with contextlib.suppress(RuntimeError):  # no running loop: the last snapshot
            self._session()
        return self._stats

    async def shutdown(self) -> None:
        """Close this client (the engine process keeps running)."""
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self._http.aclose()

    # ----- internals ------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        """The HTTP session of the running loop (the stats poller starts on first use)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._poller = loop.create_task(self._poll_stats(), name=f"engine-stats {self.url}")
        return self._http.session()

    async def _poll_stats(self) -> None:
        while not self._closed:
            try:
                self._stats = wire.stats_from_wire(await _get_json(
                    self._http.session(), self.url + "/v1/stats", self._headers,
                    aiohttp.ClientTimeout(total=self.stats_interval_s * 4)))
                if not self._alive:
                    log.info("engine process %s is reachable again", self.url)
                self._alive = True
            except (*HttpFailure, ValueError, KeyError) as exc:
                if self._alive:
                    log.warning("engine process %s unreachable: %s", self.url, exc)
                self._alive = False
            await asyncio.sleep(self.stats_interval_s)


async def _get_json(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None,
                    timeout: aiohttp.ClientTimeout | None = None) -> dict[str, Any]:
    """The JSON object at ``url``; ``aiohttp.ClientResponseError`` for a status other than 2xx."""
    async with http.get(url, headers=headers, timeout=timeout,
                        raise_for_status=True) as response:
        data = json.loads(await response.read())
    if not isinstance(data, dict):
        raise wire.WireError(f"{url}: expected a JSON object")
    return data


def _refusal(status: int, raw: bytes) -> Exception:
    """The exception for a generate request the engine process refused before streaming."""
    try:
        answer = json.loads(raw)
        error = (answer.get("error") if isinstance(answer, dict) else None) or {}
    except ValueError:
        error = {}
    if status == 400 and error.get("kind") in ("invalid_parameter", "prompt_too_long"):
        return wire.error_from_wire(error)
    return wire.RemoteEngineFailure(f"engine process answered {status}: "
                                    f"{error.get('message') or raw[:200].decode('utf-8', 'replace')}")
