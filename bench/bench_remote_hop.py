"""The remote hop's cost: an engine in this process against the same engine in an
``engine-serve`` process on loopback, reached through RemoteEngineClient, in one run.

Usage: python bench/bench_remote_hop.py [--preset qwen3-tiny] [--requests 40] [--output 64]
                                        [--concurrency 1 8] [--json out.json]

Both engines load the same checkpoint (float32, same context), and take the same greedy
requests (EOS ignored, so every request yields exactly --output tokens), alternating between
them so that machine noise falls on both alike. Reported per concurrency: TTFT p50/p99
(submit to first token) and the per-token time (the mean gap between a request's token
events after the first), for both and their difference: what the hop adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.checkpoints import bench_checkpoint  # noqa: E402
from dashserve.contracts.engine_client import EngineClient  # noqa: E402
from dashserve.contracts.params import SamplingParams  # noqa: E402
from dashserve.contracts.request import EngineRequest  # noqa: E402
from dashserve.engine.async_engine import AsyncEngine  # noqa: E402
from dashserve.upstream.remote_engine import RemoteEngineClient  # noqa: E402
from tests.ports import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


async def _one(engine: EngineClient, request_id: str, prompt: list[int],
               params: SamplingParams) -> tuple[float, list[float]]:
    start = time.perf_counter()
    stamps: list[float] = []
    async for event in engine.submit(EngineRequest(request_id, prompt, params)):
        if event.token_ids:
            stamps.append(time.perf_counter())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return stamps[0] - start, gaps


async def _round(engine: EngineClient, tag: str, n: int, concurrency: int, prompt_len: int,
                 params: SamplingParams, ttfts: list[float], gaps: list[float]) -> None:
    for start in range(0, n, concurrency):
        batch = [_one(engine, f"{tag}-{start + i}", [1000 + (start + i + k) % 5000
                                                      for k in range(prompt_len)], params)
                 for i in range(min(concurrency, n - start))]
        for ttft, request_gaps in await asyncio.gather(*batch):
            ttfts.append(ttft)
            gaps.extend(request_gaps)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(local: EngineClient, remote: EngineClient, args: argparse.Namespace
                  ) -> list[dict[str, Any]]:
    params = SamplingParams(temperature=0.0, max_tokens=args.output, ignore_eos=True)
    rows = []
    for concurrency in args.concurrency:
        data: dict[str, tuple[list[float], list[float]]] = {"local": ([], []),
                                                            "remote": ([], [])}
        for k in range(args.rounds):  # alternate: noise falls on both
            for name, engine in (("local", local), ("remote", remote)):
                ttfts, gaps = data[name]
                await _round(engine, f"{name}-c{concurrency}-r{k}",
                             args.requests // args.rounds, concurrency, args.prompt,
                             params, ttfts, gaps)
        row: dict[str, Any] = {"concurrency": concurrency}
        for name, (ttfts, gaps) in data.items():
            row[name] = {"ttft_p50_ms": 1000 * _pct(ttfts, 0.5),
                         "ttft_p99_ms": 1000 * _pct(ttfts, 0.99),
                         "per_token_ms": 1000 * statistics.fmean(gaps)}
        row["added"] = {key: row["remote"][key] - row["local"][key] for key in row["local"]}
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="qwen3-tiny")
    parser.add_argument("--requests", type=int, default=40, help="per engine and concurrency")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--output", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model_dir = bench_checkpoint(args.preset)
    engine_args = ["--dtype", "fp32", "--max-model-len", "2048"]
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashserve", "engine-serve", "--model", str(model_dir),
         "--port", str(port), "--log-level", "warning", *engine_args],
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        local = AsyncEngine.from_pretrained(str(model_dir), dtype="fp32", max_model_len=2048,
                                            warm_up=True)

        async def run() -> list[dict[str, Any]]:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 300
            while True:
                try:
                    remote = await RemoteEngineClient.connect(url)
                    break
                except Exception:  # not up yet
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    await asyncio.sleep(0.5)
            try:
                return await measure(local, remote, args)
            finally:
                await remote.shutdown()
                await local.shutdown()

        rows = asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(30)
    for row in rows:
        print(f"concurrency {row['concurrency']}:")  # noqa: T201
        for name in ("local", "remote", "added"):
            r = row[name]
            print(f"  {name:7s} TTFT p50 {r['ttft_p50_ms']:7.2f} ms  p99 "  # noqa: T201
                  f"{r['ttft_p99_ms']:7.2f} ms  per token {r['per_token_ms']:6.3f} ms")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
