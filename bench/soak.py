"""Soak: N clients against one dashserve for a given time; prints the server's RSS over time.

    python bench/soak.py --minutes 10 --clients 2                # serves the qwen3-tiny preset
    python bench/soak.py --url http://127.0.0.1:8000 --pid 1234  # an already running server

Each client loops over a mix of requests (both APIs, streamed and not, some dropped half-way,
some refused) so every path that could keep memory is taken. Every ``--every`` seconds one line
``t_s rss_mb requests errors`` is printed; the end prints the RSS growth after the first and
after the tenth minute (warm-up excluded), the figure a soak is judged by.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEY = "sk-soak"
NATIVE = "/api/v1/services/aigc/text-generation/generation"
CHAT = "/compatible-mode/v1/chat/completions"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    model = data_dir / "qwen3-tiny"
    if not (model / "config.json").exists():
        subprocess.run([sys.executable, "-m", "dashserve", "make-model", "--preset", "qwen3-tiny",
                        "--out", str(model)], check=True)
    return subprocess.Popen(
        [sys.executable, "-m", "dashserve", "serve", "--model", str(model),
         "--served-model-name", "qwen-plus", "--api-key", KEY, "--port", str(port),
         "--data-dir", str(data_dir), "--log-level", "warning"])


async def wait_healthy(client: httpx.AsyncClient, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.5)
    raise SystemExit("the server did not become healthy")


async def one_request(client: httpx.AsyncClient, rng: random.Random, counts: dict[str, int]
                      ) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    text = " ".join(rng.choice(("soak", "你好", "memory", "<|im_start|>", "json"))
                    for _ in range(rng.randint(1, 60)))
    kind = rng.random()
    if kind < 0.35:
        r = await client.post(CHAT, headers=auth, json={
            "model": "qwen-plus", "max_tokens": rng.randint(1, 32),
            "messages": [{"role": "user", "content": text}]})
    elif kind < 0.7:
        async with client.stream("POST", NATIVE, headers={**auth, "X-DashScope-SSE": "enable"},
                                 json={"model": "qwen-plus", "input": {"messages": [
                                     {"role": "user", "content": text}]},
                                       "parameters": {"max_tokens": rng.randint(1, 32),
                                                      "incremental_output": True}}) as r:
            async for i, _ in _enumerate(r.aiter_bytes()):
                if kind > 0.6 and i >= 1:  # a client that leaves half-way
                    break
    elif kind < 0.85:
        r = await client.post(CHAT, headers=auth, json={
            "model": f"no-such-model-{rng.randint(0, 10**9)}", "messages": []})
    else:
        r = await client.post(CHAT, headers=auth, json={
            "model": "qwen-plus", "temperature": 9, "messages": [{"role": "user",
                                                                   "content": text}]})
    counts["requests"] += 1
    if r.status_code >= 500:
        counts["errors"] += 1


async def _enumerate(items):
    i = 0
    async for item in items:
        yield i, item
        i += 1


async def soak(args: argparse.Namespace) -> None:
    proc = None
    if args.url is None:
        data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="dashserve-soak-"))
        proc = start_server(args.port, data_dir)
        url, pid = f"http://127.0.0.1:{args.port}", proc.pid
    else:
        url, pid = args.url, args.pid
    counts = {"requests": 0, "errors": 0}
    curve: list[tuple[float, float]] = []
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            await wait_healthy(client)
            started = time.monotonic()
            end = started + args.minutes * 60

            async def worker(seed: int) -> None:
                rng = random.Random(seed)
                while time.monotonic() < end:
                    try:
                        await one_request(client, rng, counts)
                    except httpx.HTTPError:
                        counts["errors"] += 1

            async def sampler() -> None:
                while time.monotonic() < end:
                    t = time.monotonic() - started
                    curve.append((t, rss_mb(pid)))
                    print(f"{t:7.0f} {curve[-1][1]:9.1f} {counts['requests']:9d} "
                          f"{counts['errors']:6d}", flush=True)
                    await asyncio.sleep(args.every)

            print("    t_s    rss_mb  requests errors", flush=True)
            await asyncio.gather(sampler(), *(worker(i) for i in range(args.clients)))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    for mark in (60.0, 600.0):
        base = [rss for t, rss in curve if t >= mark]
        if base:
            print(f"RSS after {mark / 60:.0f} min: {base[0]:.1f} MB; at the end {curve[-1][1]:.1f}"
                  f" MB ({(curve[-1][1] / base[0] - 1) * 100:+.1f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--every", type=float, default=30, help="seconds between RSS samples")
    parser.add_argument("--url", help="drive this server instead of starting one")
    parser.add_argument("--pid", type=int, help="the pid of the server given by --url")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data-dir", help="data dir of the server started here")
    args = parser.parse_args()
    if args.url is not None and args.pid is None:
        parser.error("--url needs --pid (whose RSS to sample)")
    asyncio.run(soak(args))


if __name__ == "__main__":
    main()
