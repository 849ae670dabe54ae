"""dashserve, llama.cpp and transformers served side by side: one command, one run.

Usage: python bench/bench_serve.py [--model-dir DIR] [--systems dashserve llamacpp transformers]
                                  [--clients 1 4 16] [--workloads chat decode] [--json PATH]

Each system serves the same random-weight qwen3-0.6b checkpoint (made if missing) in bf16 on
the same threads; `dashserve bench serve`'s load generator drives it over HTTP with N
concurrent streaming clients in compatible mode. Workloads: chat-like (256 prompt tokens,
128 output) and decode-heavy (32 prompt, 256 output). Then dashserve alone: time to first
token with a shared 2,000-token system prompt against the same prompts uncached.
Prints every run, then ratios next to the targets and the ceilings computed from this
machine's measured GEMM throughput and memory bandwidth.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import ceiling_tok_s, measure_bandwidth_gbs, measure_gemm_gflops  # noqa: E402
from bench.peers import llamacpp, transformers_peer  # noqa: E402
from dashserve.benchmark.report import BenchResult, format_table  # noqa: E402
from dashserve.benchmark.runner import BenchConfig, run_benchmark_sync, run_sweep_sync  # noqa: E402

log = logging.getLogger("bench_serve")

WORKLOADS = {"chat": (256, 128), "decode": (32, 256)}
SERVED_NAME = "qwen3-0.6b"
API_KEY = "sk-bench-local"
NO_THINKING = {  # every system renders the same prompt: Qwen3 template, thinking off
    "dashserve": {"enable_thinking": False},
    "llamacpp": {"chat_template_kwargs": {"enable_thinking": False}, "ignore_eos": True},
    "transformers": {"chat_template_kwargs": {"enable_thinking": False}, "ignore_eos": True},
}


def _wait_health(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise RuntimeError(f"server not healthy after {timeout_s:.0f} s")


@contextlib.contextmanager
def start_dashserve(model_dir: Path, port: int, threads: int) -> Iterator[str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "dashserve", "serve", "--model", str(model_dir), "--dtype", "bf16",
           "--served-model-name", SERVED_NAME, "--api-key", API_KEY, "--port", str(port)]
    log.info("starting: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env)
    try:
        _wait_health(f"http://127.0.0.1:{port}/health", proc, 600)
        yield f"http://127.0.0.1:{port}/compatible-mode/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@contextlib.contextmanager
def start_system(name: str, model_dir: Path, port: int, threads: int, slots: int) -> Iterator[str]:
    if name == "dashserve":
        with start_dashserve(model_dir, port, threads) as url:
            yield url
    elif name == "llamacpp":
        gguf = llamacpp.ensure_gguf(model_dir, "bf16")
        with llamacpp.start_llama_server(gguf, port, slots=slots, threads=threads,
                                         ctx_per_slot=1024) as url:
            yield url
    elif name == "transformers":
        with transformers_peer.start_transformers_server(model_dir, port, threads=threads,
                                                         max_batch=slots) as url:
            yield url
    else:
        raise ValueError(f"unknown system {name!r}")


def run_system(name: str, url: str, args: argparse.Namespace) -> list[BenchResult]:
    results = []
    for workload in args.workloads:
        prompt, output = WORKLOADS[workload]
        config = BenchConfig(
            base_url=url, api="compat", model=SERVED_NAME if name == "dashserve" else None,
            api_key=API_KEY, prompt_tokens=prompt, output_tokens=output,
            num_requests=None, extra_body=NO_THINKING[name], label=f"{name}/{workload}",
            first_prompt_index=1000 * len(results))
        for clients in args.clients:
            run = dataclasses.replace(config, num_requests=max(3, clients * args.rounds))
            results.extend(run_sweep_sync(run, [clients]))
            log.info("%s %s x%d: %.1f output tok/s", name, workload, clients,
                     results[-1].output_throughput)
    return results


def shared_prefix_ttft(url: str, prefix_tokens: int) -> dict[str, float | None]:
    """TTFT p50 of 1-client requests with a shared system prompt, against distinct prompts."""
    common = dict(base_url=url, api="compat", model=SERVED_NAME, api_key=API_KEY, clients=1,
                  num_requests=5, output_tokens=8, extra_body=NO_THINKING["dashserve"])
    cold = run_benchmark_sync(BenchConfig(prompt_tokens=prefix_tokens + 32, label="uncached",
                                          first_prompt_index=5000, **common))
    warm = run_benchmark_sync(BenchConfig(prompt_tokens=32, shared_prefix_tokens=prefix_tokens,
                                          label="shared prefix", first_prompt_index=6000,
                                          **common))
    return {"uncached_ttft_p50_s": cold.ttft.p50, "cached_ttft_p50_s": warm.ttft.p50,
            "cached_tokens_mean": warm.mean_cached_tokens,
            "ratio": (warm.ttft.p50 / cold.ttft.p50) if cold.ttft.p50 and warm.ttft.p50 else None}


def summary(runs: dict[str, list[BenchResult]], args: argparse.Namespace, gflops: float,
            gbs: float) -> list[dict[str, Any]]:
    def find(system: str, workload: str, clients: int) -> BenchResult | None:
        for r in runs.get(system, []):
            if r.label == f"{system}/{workload}" and r.clients == clients:
                return r
        return None

    rows = []
    for workload in args.workloads:
        prompt, output = WORKLOADS[workload]
        for clients in args.clients:
            ours = find("dashserve", workload, clients)
            row: dict[str, Any] = {"workload": workload, "clients": clients}
            for system in args.systems:
                r = find(system, workload, clients)
                row[f"{system}_tok_s"] = r.output_throughput if r else None
                row[f"{system}_ttft_p50_s"] = r.ttft.p50 if r else None
            ceiling = ceiling_tok_s(args.model_dir, clients, prompt, output, gflops, gbs)
            row["ceiling_tok_s"] = ceiling
            for peer in ("llamacpp", "transformers"):
                r = find(peer, workload, clients)
                if ours and r and r.output_throughput:
                    row[f"vs_{peer}"] = ours.output_throughput / r.output_throughput
                    row[f"ceiling_vs_{peer}"] = ceiling / r.output_throughput
            rows.append(row)
    return rows


def print_summary(rows: list[dict[str, Any]]) -> None:
    def f(v: Any, d: int = 1, suffix: str = "") -> str:
        return "-" if v is None else f"{v:.{d}f}{suffix}"

    print("\n| workload | clients | dashserve tok/s | llama.cpp tok/s | transformers tok/s "
          "| vs llama.cpp (ceiling) | vs transformers (ceiling) | TTFT p50 ours / llama.cpp |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['clients']} | {f(r.get('dashserve_tok_s'))} "
              f"| {f(r.get('llamacpp_tok_s'))} | {f(r.get('transformers_tok_s'))} "
              f"| {f(r.get('vs_llamacpp'), 2, 'x')} ({f(r.get('ceiling_vs_llamacpp'), 2, 'x')}) "
              f"| {f(r.get('vs_transformers'), 2, 'x')} "
              f"({f(r.get('ceiling_vs_transformers'), 2, 'x')}) "
              f"| {f(r.get('dashserve_ttft_p50_s'), 2)} s / {f(r.get('llamacpp_ttft_p50_s'), 2)} s |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-dir", type=Path,
                    default=Path.home() / ".cache" / "dashserve" / "bench" / "qwen3-0.6b")
    ap.add_argument("--systems", nargs="+", default=["dashserve", "llamacpp", "transformers"])
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=1, help="requests per client (at least 3 runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=16, help="parallel slots / batch of the peers")
    ap.add_argument("--prefix-tokens", type=int, default=2000)
    ap.add_argument("--port", type=int, default=8390)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not (args.model_dir / "config.json").exists():
        from dashserve.model.make import make_model

        log.info("making the qwen3-0.6b preset in %s", args.model_dir)
        make_model("qwen3-0.6b", args.model_dir, seed=0)
    rates, gbs = measure_gemm_gflops(args.threads), measure_bandwidth_gbs()
    gflops = rates["best"]
    log.info("this machine: GEMM %.0f GFLOP/s bf16, %.0f float32; copy bandwidth %.1f GB/s",
             rates["bf16"], rates["fp32"], gbs)
    if "llamacpp" in args.systems:
        llamacpp.ensure_llama_server()  # a build of several minutes the first time
    runs: dict[str, list[BenchResult]] = {}
    prefix: dict[str, Any] = {}
    for i, system in enumerate(args.systems):
        with start_system(system, args.model_dir, args.port + i, args.threads, args.slots) as url:
            runs[system] = run_system(system, url, args)
            if system == "dashserve" and args.prefix_tokens:
                prefix = shared_prefix_ttft(url, args.prefix_tokens)
        print(format_table(runs[system]), flush=True)
    rows = summary(runs, args, gflops, gbs)
    print_summary(rows)
    if prefix:
        print(f"\nshared {args.prefix_tokens}-token prefix, 1 client: TTFT p50 "
              f"{prefix['cached_ttft_p50_s']:.3f} s cached vs {prefix['uncached_ttft_p50_s']:.3f} s "
              f"uncached = {prefix['ratio']:.3f}x (target <= 0.2x); "
              f"mean cached tokens {prefix['cached_tokens_mean']}")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": {"gemm_gflops": rates, "copy_gbs": gbs, "threads": args.threads},
            "peers": {"llamacpp": llamacpp.describe(), "transformers": transformers_peer.describe()},
            "summary": rows, "shared_prefix": prefix,
            "runs": {k: [dataclasses.asdict(r) for r in v] for k, v in runs.items()},
        }, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
