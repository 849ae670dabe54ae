"""Decode throughput: 8 JSON-schema-constrained requests against 8 unconstrained ones.

Usage: python bench/bench_structured_decode.py [--model-dir DIR] [--preset qwen3-0.6b]

Both batches run on the same engine with the same prompts and produce the same number of
tokens per sequence (the free batch gets max_tokens equal to what each constrained sequence
produced, EOS ignored), so the ratio of wall times is the cost of constraining.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.checkpoints import bench_checkpoint  # noqa: E402
from dashserve.contracts.params import SamplingParams, StructuredOutputSpec  # noqa: E402
from dashserve.contracts.request import EngineRequest
from dashserve.engine.engine import EngineConfig, LLMEngine  # noqa: E402

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["id", "scores"],
          "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999},
                         "scores": {"type": "array", "minItems": 40, "maxItems": 40,
                                    "items": {"type": "integer", "minimum": 0, "maximum": 9}}}}


def run_batch(engine: LLMEngine, prompts: list[list[int]], params: list[SamplingParams]) -> tuple[float, list[int]]:
    start = time.perf_counter()
    for i, (p, sp) in enumerate(zip(prompts, params, strict=True)):
        engine.add_request(EngineRequest(f"b{time.time_ns()}-{i}", p, sp))
    lengths: dict[str, int] = {}
    while engine.has_unfinished():
        for ev in engine.step():
            lengths[ev.request_id] = ev.num_output_tokens
    return time.perf_counter() - start, list(lengths.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="qwen3-0.6b")
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    model_dir = bench_checkpoint(args.preset, args.model_dir)
    engine = LLMEngine(EngineConfig(model=str(model_dir), max_model_len=512, max_num_seqs=16))
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(1000, 150000, (args.batch, 64), generator=g).tolist()
    spec = StructuredOutputSpec(json_schema=SCHEMA)
    run_batch(engine, prompts[:1], [SamplingParams(max_tokens=8, structured=spec)])  # warm-up
    constrained = [SamplingParams(temperature=1.0, seed=i, max_tokens=400, structured=spec)
                   for i in range(args.batch)]
    t_c, lengths = run_batch(engine, prompts, constrained)
    free = [SamplingParams(temperature=1.0, seed=i, max_tokens=n, ignore_eos=True)
            for i, n in enumerate(lengths)]
    t_u, _ = run_batch(engine, prompts, free)
    tokens = sum(lengths)
    loss = 1 - t_u / t_c
    print(f"{args.batch} constrained: {tokens / t_c:.1f} tok/s | {args.batch} free: "  # noqa: T201
          f"{tokens / t_u:.1f} tok/s | throughput loss {100 * loss:.1f}% (target < 15%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
