"""The DashScope front's added latency over an upstream, against calling the upstream directly.

Usage: python bench/bench_upstream.py [--concurrency 1 64] [--num-tokens 32]
                                      [--token-delay-ms 20] [--rounds 3] [--min-requests 40]
                                      [--block 4] [--pause-ms 0]
                                      [--key store|limited|static]
                                      [--database-url URL] [--redis-url URL]
                                      [--json PATH]
                                      [--gguf FILE]   # a live llama-server instead of the fake

One run starts the upstream (the fake llama-server of tests/upstream, streaming
``--num-tokens`` tokens at one per ``--token-delay-ms``; or a real ``llama-server`` on a GGUF)
and a ``dashserve serve --upstream qwen-plus=llamacpp:URL`` front with its platform (keys,
limits, metering in SQLite, or in ``--database-url`` with ``--redis-url`` as several fronts
share them), called with a key from its key store (``--key store``, as users who create keys
call it; ``--key limited``: one with rate limits it never reaches) or its static
``--api-key``. For each concurrency the two sides take turns: batches of N streams straight to
the upstream's ``/completion`` with the same token ids the front sends, then batches of N
streams through the front's compatible mode; each turn is one uncounted batch and ``--block``
counted ones (see ``measure``). Per request: time to first token (TTFT) and the mean gap
between tokens after the first. Prints p50/p99 TTFT and the per-token mean for both, and
what the front adds; and the CPU time the front and the upstream processes spent per request
they served, less what each spends idle (read from /proc: it moves far less than latency
with what else the machine runs).

``--scale-out`` instead measures aggregate throughput through the front with one upstream
and then with two in its pool, each upstream capped at ``--capacity`` tokens/s over all its
streams (as an engine is), ``--streams`` streams at once: the ratio shows how far a pool
scales before the front's own CPU is the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.checkpoints import bench_checkpoint  # noqa: E402
from dashserve.tokenizer import Tokenizer  # noqa: E402
from tests.ports import free_port  # noqa: E402

log = logging.getLogger("bench_upstream")
API_KEY = "sk-bench-upstream"
IDLE_WINDOW_S = 2.0  # how long each process's idle CPU is read before the rounds
QUESTION = "Explain in one paragraph why the sky is blue."


def wait_health(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not healthy after {timeout_s:.0f} s")


@contextlib.contextmanager
def process(cmd: list[str], health_url: str, log_path: Path
            ) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_health(health_url, proc)
            yield proc
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            if proc.poll() is None:
                proc.kill()


def fake_upstream_cmd(port: int, num_tokens: int, *pace: str) -> list[str]:
    """The test suite's fake llama-server; `pace` is `--token-delay-ms N` or `--tokens-per-s N`."""
    return [sys.executable, "-m", "tests.upstream.fake_upstream", "--port", str(port),
            "--num-tokens", str(num_tokens), *pace]


def front_cmd(port: int, data_dir: Path, model_dir: Path, upstreams: list[str],
              shared: list[str] | None = None) -> list[str]:
    """A dashserve front serving `qwen-plus` from llama.cpp-kind upstreams; ``shared``: its
    ``--database-url``/``--redis-url`` arguments, if any."""
    return [sys.executable, "-m", "dashserve", "serve", "--port", str(port),
            "--data-dir", str(data_dir), "--api-key", API_KEY, "--no-console",
            "--log-level", "warning", "--upstream-tokenizer", str(model_dir),
            "--upstream", f"qwen-plus=llamacpp:{','.join(upstreams)}", *(shared or [])]


async def direct_stream(c: httpx.AsyncClient, url: str, ids: list[int],
                        n: int) -> tuple[float, list[float]]:
    body = {"prompt": ids, "n_predict": n, "stream": True, "return_tokens": True,
            "cache_prompt": True, "temperature": 0.0, "top_k": 0, "min_p": 0.0,
            "ignore_eos": True, "timings_per_token": True}
    return await _timed(c, url + "/completion", body, {}, lambda d: bool(d.get("tokens")))


async def front_stream(c: httpx.AsyncClient, url: str, n: int,
                       key: str = API_KEY) -> tuple[float, list[float]]:
    body = {"model": "qwen-plus", "stream": True, "max_tokens": n, "temperature": 0.0,
            "messages": [{"role": "user", "content": QUESTION}], "enable_thinking": False}
    headers = {"Authorization": f"Bearer {key}"}

    def has_text(d: dict[str, Any]) -> bool:
        choices = d.get("choices") or []
        return bool(choices and (choices[0].get("delta") or {}).get("content"))

    return await _timed(c, url + "/compatible-mode/v1/chat/completions", body, headers, has_text)


async def _timed(c: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str],
                 is_token: Any) -> tuple[float, list[float]]:
    """(TTFT, arrival times of the token chunks after the first) of one streamed request."""
    t0 = time.perf_counter()
    times: list[float] = []
    async with c.stream("POST", url, json=body, headers=headers) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            if is_token(json.loads(line[5:])):
                times.append(time.perf_counter())
    if not times:
        raise RuntimeError(f"{url}: no token came back")
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return times[0] - t0, gaps


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of process ``pid`` so far (Linux schedstat, nanoseconds; 0
    where /proc has none). Unlike latency, it hardly moves with what else the machine runs."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[0])
    return total / 1e9


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def measure(upstream: str, front: str, ids: list[int], concurrency: int, n: int,
                  rounds: int, pids: dict[str, int] | None = None, *, block: int = 4,
                  pause_s: float = 0.0, key: str = API_KEY) -> dict[str, Any]:
    """TTFT and token gaps of both sides; with ``pids`` ({"front": pid, "upstream": pid}) also
    the CPU each process spent per request it served over the rounds.

    The sides take turns in blocks: one uncounted batch, then up to ``block`` counted ones,
    each batch after ``pause_s``. While the direct side runs, the front has nothing to do, and
    on a shared machine the first work after an idle stretch runs several times slower (see
    ``idle_penalty.py``); alternating single batches made every front request pay that, and
    no direct one (the upstream is busy in both turns). The uncounted batch puts both sides
    in the same state; its TTFT is reported apart, as ``after_idle``."""
    pids = pids or {}
    # connections idle for a second are not reused: a server may close an idle one (uvicorn
    # after 5 s) just as the next round reuses it, which fails that request
    limits = httpx.Limits(max_connections=concurrency * 2 + 8, keepalive_expiry=1.0)
    out: dict[str, dict[str, list[float]]] = {
        s: {"ttft": [], "gap": [], "after_idle": []} for s in ("direct", "front")}
    warmups = 0
    async with httpx.AsyncClient(timeout=300, limits=limits, trust_env=False) as c:
        await front_stream(c, front, n, key)  # warm both paths (connections, caches)
        await direct_stream(c, upstream, ids, n)
        # what each process spends idle (timers, probes), taken out of the per-request figure
        idle_from = {name: cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.sleep(IDLE_WINDOW_S if pids else 0.0)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        idle_rate = {name: (cpu_before[name] - idle_from[name]) / IDLE_WINDOW_S for name in pids}
        started = time.perf_counter()
        left = rounds
        while left > 0:
            counted = min(block, left)
            left -= counted
            warmups += 1
            for side in ("direct", "front"):
                for i in range(counted + 1):
                    await asyncio.sleep(pause_s)
                    results = await asyncio.gather(*(
                        direct_stream(c, upstream, ids, n) if side == "direct"
                        else front_stream(c, front, n, key) for _ in range(concurrency)))
                    for ttft, gaps in results:
                        if i == 0:
                            out[side]["after_idle"].append(ttft)
                            continue
                        out[side]["ttft"].append(ttft)
                        out[side]["gap"].extend(gaps)
        await asyncio.sleep(1.0)  # the front's usage writer flushes what the last round billed
        elapsed = time.perf_counter() - started
        cpu = {name: cpu_seconds(pid) - cpu_before[name] - idle_rate[name] * elapsed
               for name, pid in pids.items()}
    row: dict[str, Any] = {"concurrency": concurrency, "requests": concurrency * rounds,
                           "block": block, "pause_s": pause_s}
    per_side = concurrency * (rounds + warmups)
    served = {"front": per_side, "upstream": 2 * per_side}
    row["cpu_ms_per_request"] = {name: spent * 1e3 / served[name] for name, spent in cpu.items()}
    row["idle_cpu_ms_per_s"] = {name: rate * 1e3 for name, rate in idle_rate.items()}
    for side, v in out.items():
        row[side] = {"ttft_p50_ms": pct(v["ttft"], 0.5) * 1e3, "ttft_p99_ms": pct(v["ttft"], 0.99) * 1e3,
                     "per_token_ms": statistics.fmean(v["gap"]) * 1e3}
        row[side + "_after_idle"] = {"ttft_p50_ms": pct(v["after_idle"], 0.5) * 1e3,
                                     "requests": len(v["after_idle"])}
    row["added"] = {k: row["front"][k] - row["direct"][k] for k in row["front"]}
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'streams':>7} {'side':>7} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} {'ms/token':>9}"
    lines = [head, "-" * len(head)]
    for row in rows:
        for side in ("direct", "front", "added"):
            v = row[side]
            lines.append(f"{row['concurrency']:>7} {side:>7} {v['ttft_p50_ms']:>12.2f} "
                         f"{v['ttft_p99_ms']:>12.2f} {v['per_token_ms']:>9.3f}")
    for row in rows:
        cpu = row.get("cpu_ms_per_request") or {}
        if cpu:
            idle = row["idle_cpu_ms_per_s"]
            lines.append(f"{row['concurrency']:>7} streams: CPU per request served, " + ", ".join(
                f"{name} {ms:.2f} ms" for name, ms in sorted(cpu.items())) + " (idle: " + ", ".join(
                f"{name} {idle[name]:.1f} ms/s" for name in sorted(idle)) + ", taken out)")
    for row in rows:
        cold = {side: row[side + "_after_idle"] for side in ("direct", "front")}
        lines.append(f"{row['concurrency']:>7} streams: the first batch of each turn (uncounted; "
                     f"its side was idle while the other side ran), TTFT p50 direct "
                     f"{cold['direct']['ttft_p50_ms']:.2f} / front {cold['front']['ttft_p50_ms']:.2f}"
                     f" ms ({cold['front']['requests']} requests each)")
    sys.stdout.write("\n".join(lines) + "\n")


async def throughput(front: str, streams: int, n: int, seconds: float) -> float:
    """Output tokens a second through the front with ``streams`` clients for ``seconds``."""
    stop_at = time.perf_counter() + seconds
    done = 0

    async def client(c: httpx.AsyncClient, i: int) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            body = {"model": "qwen-plus", "stream": True, "max_tokens": n, "temperature": 0.0,
                    "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": f"{QUESTION} ({i}, {time.time()})"}]}
            async with c.stream("POST", front + "/compatible-mode/v1/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {API_KEY}"}) as r:
                async for line in r.aiter_lines():
                    if '"usage"' in line and '"completion_tokens"' in line:
                        usage = json.loads(line[5:]).get("usage") or {}
                        done += int(usage.get("completion_tokens") or 0)

    limits = httpx.Limits(max_connections=streams + 8)
    async with httpx.AsyncClient(timeout=300, limits=limits, trust_env=False) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, i) for i in range(streams)))
        return done / (time.perf_counter() - t0)


def scale_out(args: argparse.Namespace, model_dir: Path, work: Path) -> dict[str, Any]:
    """Aggregate tokens/s through one front over 1, then 2 capacity-capped upstreams."""
    ports = [free_port(), free_port()]
    ups = [f"http://127.0.0.1:{p}" for p in ports]
    result: dict[str, Any] = {"capacity_tok_s": args.capacity, "streams": args.streams}
    with contextlib.ExitStack() as stack:
        for port, url in zip(ports, ups, strict=True):
            stack.enter_context(process(
                fake_upstream_cmd(port, args.num_tokens, "--tokens-per-s", str(args.capacity)),
                url + "/health", work / f"upstream-{port}.log"))
        for k in (1, 2):
            front_port = free_port()
            front = f"http://127.0.0.1:{front_port}"
            cmd = front_cmd(front_port, work / f"front{k}", model_dir, ups[:k])
            with process(cmd, front + "/health", work / f"front{k}.log"):
                rate = asyncio.run(throughput(front, args.streams, args.num_tokens, args.seconds))
            result[f"{k}_upstream_tok_s"] = rate
            log.info("%d upstream(s): %.0f tokens/s", k, rate)
    result["ratio"] = result["2_upstream_tok_s"] / result["1_upstream_tok_s"]
    sys.stdout.write(f"scale-out: 1 upstream {result['1_upstream_tok_s']:.0f} tok/s, 2 upstreams "
                     f"{result['2_upstream_tok_s']:.0f} tok/s, ratio {result['ratio']:.2f}x "
                     f"(each capped at {args.capacity:.0f} tok/s)\n")
    return result


def issue_key(data_dir: Path, database_url: str | None = None, limited: bool = False) -> str:
    """A key made by ``dashserve keys create`` in the front's store, before it starts; with
    ``limited``, RPM, TPM and concurrency limits far above what the bench sends (each request
    is then admitted and settled by the rate limiter, in Redis with ``--redis-url``)."""
    where = ["--database-url", database_url] if database_url else ["--data-dir", str(data_dir)]
    limits = ["--rpm", "1000000", "--tpm", "1000000000", "--concurrency", "10000"] \
        if limited else []
    out = subprocess.run([sys.executable, "-m", "dashserve", "keys", "create", "--name", "bench",
                          "--json", *where, *limits],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return str(json.loads(out.strip().splitlines()[-1])["secret"])


def prompt_ids(model_dir: Path) -> list[int]:
    """The ids the front sends for QUESTION (Qwen3 template, thinking off)."""
    tok = Tokenizer.from_dir(model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": QUESTION}],
                                   add_generation_prompt=True, enable_thinking=False)
    return tok.encode(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--num-tokens", type=int, default=32)
    parser.add_argument("--token-delay-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-requests", type=int, default=40,
                        help="more rounds where needed so each side has at least this many "
                             "requests per concurrency (a p50 of 3 requests is noise)")
    parser.add_argument("--block", type=int, default=4,
                        help="counted batches per turn of a side, after one uncounted batch")
    parser.add_argument("--pause-ms", type=float, default=0.0,
                        help="idle time before every batch, the same for both sides")
    parser.add_argument("--key", choices=("store", "limited", "static"), default="store",
                        help="call the front with a key from its key store (as users who "
                             "create keys do), one with rate limits (never reached), or "
                             "with its static --api-key")
    parser.add_argument("--database-url", help="the front's key store and usage database "
                        "(default: SQLite in a fresh data dir), e.g. postgresql://...")
    parser.add_argument("--redis-url", help="the front's shared rate limits, e.g. redis://...")
    parser.add_argument("--gguf", type=Path, help="serve this GGUF with the built llama-server")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--scale-out", action="store_true",
                        help="aggregate throughput over 1 and 2 capacity-capped upstreams")
    parser.add_argument("--capacity", type=float, default=400.0, help="tokens/s per upstream")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    model_dir = bench_checkpoint("qwen3-tiny")
    work = Path(tempfile.mkdtemp(prefix="bench-upstream-"))
    if args.scale_out:
        result = scale_out(args, model_dir, work)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    ids = prompt_ids(model_dir)
    up_port, front_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    front = f"http://127.0.0.1:{front_port}"
    if args.gguf:
        from bench.peers import llamacpp

        server = llamacpp.ensure_llama_server()
        up_cmd = llamacpp.server_command(server, args.gguf, up_port, slots=max(args.concurrency),
                                         threads=1, ctx_per_slot=512)
    else:
        up_cmd = fake_upstream_cmd(up_port, args.num_tokens,
                                   "--token-delay-ms", str(args.token_delay_ms))
    env_note = {"cpus": os.cpu_count(), "upstream": "llama-server" if args.gguf else "fake",
                "num_tokens": args.num_tokens, "token_delay_ms": args.token_delay_ms,
                "block": args.block, "pause_ms": args.pause_ms, "key": args.key,
                "database": "postgresql" if args.database_url else "sqlite",
                "redis": bool(args.redis_url)}
    shared = [*(["--database-url", args.database_url] if args.database_url else []),
              *(["--redis-url", args.redis_url] if args.redis_url else [])]
    key = API_KEY if args.key == "static" else \
        issue_key(work, args.database_url, limited=args.key == "limited")
    rows = []
    with process(up_cmd, upstream + "/health", work / "upstream.log") as up_proc, \
            process(front_cmd(front_port, work, model_dir, [upstream], shared), front + "/health",
                    work / "front.log") as front_proc:
        pids = {"front": front_proc.pid, "upstream": up_proc.pid}
        for n in args.concurrency:
            rounds = max(args.rounds, -(-args.min_requests // n))
            log.info("%d concurrent streams x %d rounds", n, rounds)
            rows.append(asyncio.run(measure(upstream, front, ids, n, args.num_tokens, rounds,
                                            pids, block=args.block,
                                            pause_s=args.pause_ms / 1e3, key=key)))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"setup": env_note, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
