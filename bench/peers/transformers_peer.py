"""Plain-transformers peer for the serving benchmark: a thin OpenAI-compatible server over `generate`.

The server takes whatever chat requests are waiting (up to ``max_batch``), runs one left-padded
batched ``model.generate`` over them, and streams each row's tokens as they are produced through a
per-step ``StoppingCriteria`` hook. Requests arriving mid-batch wait for the next batch (static
batching), which is what plain transformers offers. ``transformers serve --continuous-batching``
can be launched instead (``mode="transformers-serve"``) but needs ``accelerate`` importable and is
far slower on CPU; see ``describe()``.

Run directly: ``python bench/peers/transformers_peer.py serve --model DIR --port N``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request  # module level: route annotations must resolve for FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

log = logging.getLogger("bench.peers.transformers")

GENERATE_LOOP = "generate-loop"
TRANSFORMERS_SERVE = "transformers-serve"


class PeerStartupError(RuntimeError):
    """The peer server did not become healthy."""


@dataclass
class Job:
    """One chat request travelling from the HTTP handler to the generate thread and back."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    ignore_eos: bool
    loop: Any
    out: Any  # asyncio.Queue of int token ids, then ("end", finish_reason) or ("error", text)
    cancelled: bool = False
    produced: int = 0
    done: bool = False
    finish: str = "length"

    def push(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


@dataclass
class Worker:
    """Owns the model; batches waiting jobs into one `generate` call at a time."""

    model: Any
    tokenizer: Any
    threads: int
    max_batch: int
    eos_ids: set[int]
    gather_s: float = 0.02
    jobs: queue.Queue = field(default_factory=queue.Queue)

    def run_forever(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        while True:
            batch = [self.jobs.get()]
            deadline = time.monotonic() + self.gather_s  # let near-simultaneous arrivals share it
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.jobs.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                self.generate(batch)
            except Exception as exc:  # report to every waiting client, keep serving
                log.exception("generate failed")
                for job in batch:
                    job.push(("error", str(exc)))
                continue
            for job in batch:
                job.push(("end", job.finish))

    def generate(self, batch: list[Job]) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(j.prompt_ids) for j in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, job in enumerate(batch):
            ids[row, width - len(job.prompt_ids):] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids):] = 1
        with torch.inference_mode():
            self.model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False,
                max_new_tokens=max(j.max_tokens for j in batch),
                eos_token_id=None, pad_token_id=pad,  # end-of-sequence is decided per row below
                logits_processor=LogitsProcessorList([RowSampler(batch)]),
                stopping_criteria=StoppingCriteriaList([RowStreamer(batch, self.eos_ids)]),
            )


class RowSampler:
    """Per-row sampling: rows with temperature > 0 draw a token; greedy rows keep argmax."""

    def __init__(self, batch: list[Job]) -> None:
        self.batch = batch

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for row, job in enumerate(self.batch):
            if job.temperature <= 0 or job.done:
                continue
            probs = torch.softmax(scores[row].float() / job.temperature, dim=-1)
            if job.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                keep = (sorted_p.cumsum(-1) - sorted_p) < job.top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
            token = int(torch.multinomial(probs, 1))
            scores[row].fill_(float("-inf"))
            scores[row, token] = 0.0
        return scores


class RowStreamer:
    """Called once per step with the new tokens: streams each live row, decides which rows stop."""

    def __init__(self, batch: list[Job], eos_ids: set[int]) -> None:
        self.batch = batch
        self.eos_ids = eos_ids

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        last = input_ids[:, -1].tolist()
        for row, job in enumerate(self.batch):
            if job.done:
                continue
            job.produced += 1
            job.push(last[row])
            if not job.ignore_eos and last[row] in self.eos_ids:
                job.done, job.finish = True, "stop"
            elif job.produced >= job.max_tokens or job.cancelled:
                job.done = True
        return torch.tensor([job.done for job in self.batch], dtype=torch.bool)


def _chunk(rid: str, model: str, created: int, delta: dict, finish: str | None) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


async def _drain(job: Job, tokenizer: Any) -> Any:
    """Yield ("text", piece) as tokens arrive, then ("end", finish_reason) or ("error", msg)."""
    ids: list[int] = []
    sent = ""
    while True:
        item = await job.out.get()
        if isinstance(item, tuple):
            yield item
            return
        ids.append(item)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if len(text) > len(sent) and not text.endswith("\ufffd"):
            yield ("text", text[len(sent):])
            sent = text


def build_app(worker: Worker, model_name: str) -> Any:
    import asyncio

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "bench"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        kwargs = body.get("chat_template_kwargs") or {}
        text = worker.tokenizer.apply_chat_template(
            body["messages"], tokenize=False, add_generation_prompt=True, **kwargs)
        prompt_ids = worker.tokenizer(text, add_special_tokens=False)["input_ids"]
        job = Job(prompt_ids=prompt_ids,
                  max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 256),
                  temperature=float(1.0 if body.get("temperature") is None else body["temperature"]),
                  top_p=float(body.get("top_p") or 1.0), ignore_eos=bool(body.get("ignore_eos", False)),
                  loop=asyncio.get_running_loop(), out=asyncio.Queue())
        worker.jobs.put(job)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        name = body.get("model") or model_name
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_sse(job, worker.tokenizer, rid, name, created, usage),
                                     media_type="text/event-stream")
        return JSONResponse(await _whole(job, worker.tokenizer, rid, name, created))

    return app


async def _sse(job: Job, tokenizer: Any, rid: str, model: str, created: int, usage: bool) -> Any:
    def line(obj: dict) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    try:
        yield line(_chunk(rid, model, created, {"role": "assistant", "content": ""}, None))
        async for kind, value in _drain(job, tokenizer):
            if kind == "text":
                yield line(_chunk(rid, model, created, {"content": value}, None))
            elif kind == "error":
                yield line({"error": {"message": value, "type": "server_error"}})
            else:
                yield line(_chunk(rid, model, created, {}, value))
        if usage:
            yield line({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [], "usage": _usage(len(job.prompt_ids), job.produced)})
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled = True  # a disconnected client stops its row at the next step


async def _whole(job: Job, tokenizer: Any, rid: str, model: str, created: int) -> dict:
    parts, finish = [], "length"
    async for kind, value in _drain(job, tokenizer):
        if kind == "text":
            parts.append(value)
        elif kind == "error":
            return {"error": {"message": value, "type": "server_error"}}
        else:
            finish = value
    message = {"role": "assistant", "content": "".join(parts)}
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": _usage(len(job.prompt_ids), job.produced)}


def serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).eval()
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    worker = Worker(model=model, tokenizer=tokenizer, threads=args.threads,
                    max_batch=args.max_batch, eos_ids={e for e in eos_ids if e is not None})
    with torch.inference_mode():  # warm-up, so the first timed request does not pay one-off costs
        model.generate(**tokenizer(["warm up"] * 2, return_tensors="pt"), max_new_tokens=2,
                       do_sample=False, pad_token_id=tokenizer.pad_token_id)
    threading.Thread(target=worker.run_forever, name="generate-loop", daemon=True).start()
    app = build_app(worker, Path(args.model).name)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _command(mode: str, ckpt_dir: Path, port: int, threads: int, dtype: str, max_batch: int) -> list[str]:
    if mode == GENERATE_LOOP:
        return [sys.executable, str(Path(__file__).resolve()), "serve", "--model", str(ckpt_dir),
                "--port", str(port), "--threads", str(threads), "--dtype", dtype,
                "--max-batch", str(max_batch)]
    if mode == TRANSFORMERS_SERVE:
        if importlib.util.find_spec("accelerate") is None:
            raise PeerStartupError("transformers serve needs `accelerate` importable (pip install accelerate)")
        cli = Path(sys.executable).with_name("transformers")
        return [str(cli), "serve", str(ckpt_dir), "--continuous-batching", "--device", "cpu",
                "--dtype", dtype, "--host", "127.0.0.1", "--port", str(port)]
    raise ValueError(f"unknown mode {mode!r}")


def _wait_healthy(proc: subprocess.Popen, port: int, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    tail = log_path.read_text(errors="replace")[-3000:]
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not healthy after {timeout:.0f}s"
    raise PeerStartupError(f"transformers peer on port {port} {state}; output tail:\n{tail}")


@contextlib.contextmanager
def start_transformers_server(ckpt_dir: Path, port: int, threads: int = 2, dtype: str = "bfloat16",
                              max_batch: int = 16, mode: str = GENERATE_LOOP,
                              startup_timeout: float = 300.0) -> Iterator[str]:
    """Start the peer as a subprocess; yield its OpenAI base URL; stop it on exit."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = _command(mode, Path(ckpt_dir), port, threads, dtype, max_batch)
    with tempfile.NamedTemporaryFile(prefix="transformers-peer-", suffix=".log", delete=False) as fh:
        log_path = Path(fh.name)
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_healthy(proc, port, startup_timeout, log_path)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_path.unlink(missing_ok=True)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(mode: str = GENERATE_LOOP) -> dict:
    """Which serving path this peer uses, and the library versions behind it."""
    why = {
        GENERATE_LOOP: "static batching: waiting requests share one left-padded model.generate; "
                       "streams per step; new arrivals wait for the running batch",
        TRANSFORMERS_SERVE: "transformers serve --continuous-batching (paged attention); "
                            "needs accelerate; very slow on CPU",
    }[mode]
    return {"peer": "transformers", "mode": mode, "how": why,
            "transformers": _version("transformers"), "torch": _version("torch"),
            "accelerate": _version("accelerate")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transformers_peer")
    sub = parser.add_subparsers(dest="cmd", required=True)
    srv = sub.add_parser("serve")
    srv.add_argument("--model", required=True)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--threads", type=int, default=2)
    srv.add_argument("--dtype", default="bfloat16")
    srv.add_argument("--max-batch", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
