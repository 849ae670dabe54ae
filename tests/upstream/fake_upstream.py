"""A stand-in upstream speaking llama.cpp's ``/completion``, OpenAI's ``/v1/completions``
(token-id output as vLLM's ``return_token_ids``) and SGLang's ``/generate``, run as its own
process on loopback.

It generates ``--num-tokens`` deterministic ordinary tokens at ``--token-delay-ms`` each
(and, like an engine, at most ``--tokens-per-s`` over all its streams together),
reports a prefix cache (prompt tokens shared with an earlier prompt it saw), and counts
requests, open streams and client disconnects at ``GET /_stats`` (open streams also as
vLLM's and llama.cpp's load gauges at ``GET /metrics``). ``POST /_mode`` with
``{"fail": 500}`` makes it answer that status; ``{"hold": true}`` holds every stream
before its first token until ``{"hold": false}``.

    python -m tests.upstream.fake_upstream --port 8101 [--num-tokens 8] [--token-delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

FIRST_ID = 1000  # ordinary BPE tokens of the Qwen vocabulary
SPAN = 500
MAX_CACHED_PROMPTS = 64  # its prefix cache holds the last prompts (a lookup stays cheap)


class State:
    def __init__(self, num_tokens: int, delay_s: float, tokens_per_s: float = 0.0) -> None:
        self.num_tokens = num_tokens
        self.delay_s = delay_s
        # an engine's capacity: all streams together get at most this many tokens a second
        self.token_interval_s = 1.0 / tokens_per_s if tokens_per_s else 0.0
        self.next_free = 0.0
        self.requests = 0
        self.active = 0
        self.disconnected = 0
        self.completed = 0
        self.fail: int | None = None
        self.released = asyncio.Event()
        self.released.set()
        self.prompts: deque[list[int]] = deque(maxlen=MAX_CACHED_PROMPTS)
        self.bodies: list[dict[str, Any]] = []
        self.deterministic = False  # what /server_info says of --enable-deterministic-inference
        self.info_reads = 0

    def cached(self, prompt: list[int]) -> int:
        best = 0
        for old in self.prompts:
            n = 0
            for a, b in zip(old, prompt, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        self.prompts.append(prompt)
        return min(best, len(prompt) - 1)

    async def pace(self) -> None:
        """Wait for this stream's next token under the per-token delay and the capacity."""
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.token_interval_s:
            loop = asyncio.get_running_loop()
            now = loop.time()
            slot = max(now, self.next_free)
            self.next_free = slot + self.token_interval_s
            if slot > now:
                await asyncio.sleep(slot - now)

    def output(self, prompt: list[int], max_tokens: int) -> list[int]:
        seed = sum(prompt)
        return [FIRST_ID + (seed + i * 7) % SPAN for i in range(min(self.num_tokens, max_tokens))]


def prompt_ids(prompt: Any) -> list[int]:
    if isinstance(prompt, list):
        return [int(t) for t in prompt]
    return [FIRST_ID + ord(c) % SPAN for c in str(prompt)]  # text: one "token" per character


def make_app(state: State) -> Starlette:
    async def stream(body: dict[str, Any], fmt: str) -> AsyncIterator[bytes]:
        prompt = prompt_ids(body.get("prompt", body.get("input_ids")))
        sampling = body.get("sampling_params") or {}
        max_tokens = int(body.get("n_predict") or body.get("max_tokens")
                         or sampling.get("max_new_tokens") or 16)
        cached = state.cached(prompt)
        ids = state.output(prompt, max_tokens)
        state.active += 1
        finished = False
        try:
            await state.released.wait()
            for i, token in enumerate(ids):
                await state.pace()
                if fmt == "sglang":  # cumulative output, SGLang's default
                    yield _line(_sglang(ids[:i + 1], len(prompt), cached, None))
                    continue
                yield _line(_partial(fmt, token, len(prompt), cached, i + 1))
            reason = "length" if len(ids) == max_tokens else "stop"
            if fmt == "sglang":
                yield _line(_sglang(ids, len(prompt), cached, reason))
            else:
                for obj in _final(fmt, reason, len(prompt), cached, len(ids)):
                    yield _line(obj)
            if fmt in ("openai", "sglang"):
                yield b"data: [DONE]\n\n"
            finished = True
            state.completed += 1
        finally:
            state.active -= 1
            if not finished:
                state.disconnected += 1

    async def completion(request: Request) -> Response:
        return await _serve(request, "llamacpp")

    async def completions(request: Request) -> Response:
        return await _serve(request, "openai")

    async def generate(request: Request) -> Response:
        return await _serve(request, "sglang")

    async def _serve(request: Request, fmt: str) -> Response:
        body = await request.json()
        state.requests += 1
        state.bodies = [*state.bodies[-9:], body]
        if state.fail is not None:
            return JSONResponse({"error": {"message": "injected failure"}}, state.fail)
        return StreamingResponse(stream(body, fmt), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        if state.fail is not None:
            return JSONResponse({"error": "unhealthy"}, 503)
        return JSONResponse({"status": "ok"})

    async def stats(request: Request) -> Response:
        return JSONResponse({"requests": state.requests, "active": state.active,
                             "disconnected": state.disconnected, "completed": state.completed,
                             "bodies": state.bodies, "info_reads": state.info_reads})

    async def metrics(request: Request) -> Response:
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="fake"}} {float(state.active)}',
            'vllm:num_requests_waiting{model_name="fake"} 0.0',
            f"llamacpp:requests_processing {state.active}", "llamacpp:requests_deferred 0",
        ]
        return Response("\n".join(lines) + "\n", media_type="text/plain")

    async def server_info(request: Request) -> Response:  # SGLang's description of itself
        state.info_reads += 1
        return JSONResponse({"version": "fake",
                             "enable_deterministic_inference": state.deterministic})

    async def mode(request: Request) -> Response:
        body = await request.json()
        if "deterministic" in body:
            state.deterministic = bool(body["deterministic"])
        if "fail" in body:
            state.fail = body["fail"]
        if "hold" in body:
            (state.released.clear if body["hold"] else state.released.set)()
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/completion", completion, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/generate", generate, methods=["POST"]),
        Route("/health", health), Route("/v1/models", health), Route("/_stats", stats),
        Route("/_mode", mode, methods=["POST"]), Route("/metrics", metrics),
        Route("/server_info", server_info),
    ])


def _line(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _partial(fmt: str, token: int, n_prompt: int, cached: int, n_out: int) -> dict[str, Any]:
    if fmt == "llamacpp":
        return {"index": 0, "content": f"t{token} ", "tokens": [token], "stop": False,
                "id_slot": 0, "tokens_predicted": n_out, "tokens_evaluated": n_prompt,
                "timings": {"cache_n": cached, "prompt_n": n_prompt - cached,
                            "predicted_n": n_out}}
    return {"id": "cmpl-fake", "object": "text_completion", "model": "fake",
            "choices": [{"index": 0, "text": f"t{token} ", "token_ids": [token],
                         "logprobs": None, "finish_reason": None, "stop_reason": None}],
            "usage": None}


def _sglang(ids: list[int], n_prompt: int, cached: int, reason: str | None) -> dict[str, Any]:
    finish = None if reason is None else {"type": reason}
    return {"text": "".join(f"t{t} " for t in ids), "output_ids": ids, "index": 0,
            "meta_info": {"id": "fake", "finish_reason": finish, "prompt_tokens": n_prompt,
                          "completion_tokens": len(ids), "cached_tokens": cached}}


def _final(fmt: str, reason: str, n_prompt: int, cached: int, n_out: int) -> list[dict[str, Any]]:
    if fmt == "llamacpp":
        return [{"index": 0, "content": "", "tokens": [], "stop": True, "id_slot": 0,
                 "tokens_predicted": n_out, "tokens_evaluated": n_prompt,
                 "stop_type": "limit" if reason == "length" else "eos",
                 "stopping_word": "", "tokens_cached": n_prompt + n_out,
                 "timings": {"cache_n": cached, "prompt_n": n_prompt - cached,
                             "predicted_n": n_out}}]
    return [
        {"id": "cmpl-fake", "object": "text_completion", "model": "fake",
         "choices": [{"index": 0, "text": "", "token_ids": [], "logprobs": None,
                      "finish_reason": reason, "stop_reason": None}], "usage": None},
        {"id": "cmpl-fake", "object": "text_completion", "model": "fake", "choices": [],
         "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                   "total_tokens": n_prompt + n_out,
                   "prompt_tokens_details": {"cached_tokens": cached}}},
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--num-tokens", type=int, default=8)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-s", type=float, default=0.0,
                        help="capacity: tokens a second over all streams (0: unlimited)")
    args = parser.parse_args()
    state = State(args.num_tokens, args.token_delay_ms / 1000, args.tokens_per_s)
    uvicorn.run(make_app(state), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
