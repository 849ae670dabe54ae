"""What this machine can do at best, measured in the same run as a benchmark: the ceilings
that every throughput figure is set against.

- copy bandwidth: bytes read and written per second over a buffer far larger than the caches;
- GEMM rate: the best of bf16 and float32 matmul at a prompt-sized shape. CPUs without bf16
  math (AVX2 only, e.g. AMD Zen 3) do bf16 work by widening to float32, so their float32
  rate is the honest ceiling; CPUs with AVX512-BF16 or AMX are faster in bf16.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

PREFILL_SHAPE = (512, 1024, 3072)  # rows, in features, out features: a Qwen3-0.6B MLP chunk


def measure_bandwidth_gbs(size_mb: int = 512, repeats: int = 7) -> float:
    """Copy bandwidth (read + write bytes per second) of a large out-of-cache buffer."""
    src = np.ones(size_mb * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def measure_gemm_gflops(threads: int | None = None) -> dict[str, float]:
    """GEMM GFLOP/s in bf16 and float32 at PREFILL_SHAPE, and the better of the two."""
    if threads:
        torch.set_num_threads(threads)
    m, k, n = PREFILL_SHAPE
    rates = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a = torch.randn(m, k, dtype=dtype)
        w = torch.randn(n, k, dtype=dtype)
        for _ in range(2):
            a @ w.t()
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            a @ w.t()
            best = min(best, time.perf_counter() - t0)
        rates[name] = 2 * m * k * n / best / 1e9
    rates["best"] = max(rates["bf16"], rates["fp32"])
    return rates


def model_flops(model_dir: Path) -> tuple[int, int]:
    """(body params, lm_head params) of a checkpoint's config: 2 FLOP per param per token."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    head_dim = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q = cfg["num_attention_heads"] * head_dim
    kv = cfg["num_key_value_heads"] * head_dim
    body = layers * (h * (q + 2 * kv) + q * h + 3 * h * cfg["intermediate_size"])
    return body, vocab * h


def ceiling_tok_s(model_dir: Path, sequences: int, prompt: int, output: int,
                  gflops: float, gbs: float, bytes_per_param: int = 2) -> float:
    """Best possible aggregate output tok/s for ``sequences`` requests started together:
    their prompt work at the GEMM rate, then ``output`` batched decode steps, each bounded by
    reading the weights once or by its arithmetic, whichever is slower."""
    body, head = model_flops(model_dir)
    weight_bytes = bytes_per_param * (body + head)
    prefill_s = sequences * prompt * 2 * body / (gflops * 1e9)
    step_s = max(weight_bytes / (gbs * 1e9), sequences * 2 * (body + head) / (gflops * 1e9))
    return sequences * output / (prefill_s + output * step_s)
