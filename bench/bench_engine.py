"""Engine throughput against transformers `generate`, side by side in one run.

Usage: python bench/bench_engine.py [--preset qwen3-0.6b] [--batches 1 16] [--prompt 128] [--output 128]

Same checkpoint, dtype, threads and prompts for both; EOS is ignored so every sequence
produces exactly --output tokens. Also measures single-stream decode ms/token against the
memory-bandwidth roofline (weight bytes read per token / measured copy bandwidth).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.checkpoints import TORCH_DTYPES, bench_checkpoint  # noqa: E402
from bench.machine import ceiling_tok_s, measure_bandwidth_gbs, measure_gemm_gflops  # noqa: E402
from dashserve.contracts.params import SamplingParams  # noqa: E402
from dashserve.contracts.request import EngineRequest
from dashserve.engine.engine import EngineConfig, LLMEngine  # noqa: E402

log = logging.getLogger("bench")


def random_prompts(n: int, length: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1000, 150000, (n, length), generator=g).tolist()


def run_ours(engine: LLMEngine, prompts: list[list[int]], output_len: int) -> dict[str, float]:
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    start = time.perf_counter()
    first_token_at = None
    for i, p in enumerate(prompts):
        engine.add_request(EngineRequest(f"bench-{time.time_ns()}-{i}", p, params))
    steps_after_first = 0
    while engine.has_unfinished():
        events = engine.step()
        if events and first_token_at is None:
            first_token_at = time.perf_counter()
        elif events:
            steps_after_first += 1
    total = time.perf_counter() - start
    assert first_token_at is not None
    decode_s = total - (first_token_at - start)
    return {
        "total_s": total, "tok_s": len(prompts) * output_len / total,
        "prefill_s": first_token_at - start,
        "decode_ms_per_step": 1000 * decode_s / max(1, steps_after_first),
    }


def run_transformers(model_dir: Path, dtype: torch.dtype, prompts: list[list[int]],
                     output_len: int) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    ids = torch.tensor(prompts)
    kwargs = dict(max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False,
                  attention_mask=torch.ones_like(ids), pad_token_id=151643)
    with torch.inference_mode():
        model.generate(ids[:, :8], max_new_tokens=2, min_new_tokens=2, do_sample=False,
                       pad_token_id=151643)  # warm-up
        t0 = time.perf_counter()
        model.generate(ids, **kwargs)
        total = time.perf_counter() - t0
    return {"total_s": total, "tok_s": len(prompts) * output_len / total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="qwen3-0.6b")
    ap.add_argument("--model-dir", type=Path, default=None, help="reuse/make the model here")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--output", type=int, default=128)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    model_dir = bench_checkpoint(args.preset, args.model_dir, args.dtype)
    dtype = TORCH_DTYPES[args.dtype]
    engine = LLMEngine(EngineConfig(
        model=str(model_dir), dtype=args.dtype, max_model_len=args.prompt + args.output + 16,
        max_num_seqs=max(args.batches), max_num_batched_tokens=max(512, args.prompt),
        kv_cache_gb=2.0,
    ))
    weight_bytes = engine.weight_bytes
    bandwidth = measure_bandwidth_gbs()
    rates = measure_gemm_gflops()
    roofline_ms = weight_bytes / (bandwidth * 1e9) * 1000
    log.info("threads %d, weights %.2f GB, copy bandwidth %.1f GB/s, roofline %.1f ms/token, "
             "GEMM %.0f GFLOP/s bf16 / %.0f float32", torch.get_num_threads(), weight_bytes / 1e9,
             bandwidth, roofline_ms, rates["bf16"], rates["fp32"])
    run_ours(engine, random_prompts(2, 16, seed=99), 4)  # warm-up
    results: dict[str, object] = {"preset": args.preset, "dtype": args.dtype,
                                  "threads": torch.get_num_threads(),
                                  "bandwidth_gbs": bandwidth, "roofline_ms": roofline_ms,
                                  "gemm_gflops": rates}
    # all of ours first, then all of transformers: the two never share a process state
    ours_by_batch = {b: run_ours(engine, random_prompts(b, args.prompt, seed=b), args.output)
                     for b in args.batches}
    del engine
    for batch in args.batches:
        ours = ours_by_batch[batch]
        ceiling = ceiling_tok_s(model_dir, batch, args.prompt, args.output, rates["best"],
                                bandwidth, dtype.itemsize)
        row: dict[str, object] = {"ours": ours, "ceiling_tok_s": ceiling}
        line = f"batch {batch:3d}: dashserve {ours['tok_s']:7.2f} tok/s (ceiling {ceiling:.1f})"
        if not args.skip_transformers:
            prompts = random_prompts(batch, args.prompt, seed=batch)
            theirs = run_transformers(model_dir, dtype, prompts, args.output)
            row["transformers"] = theirs
            row["ratio"] = ours["tok_s"] / theirs["tok_s"]
            row["ceiling_ratio"] = ceiling / theirs["tok_s"]
            line += (f" | transformers {theirs['tok_s']:7.2f} tok/s | ratio {row['ratio']:.2f}x"
                     f" (ceiling {row['ceiling_ratio']:.2f}x)")
        if batch == 1:
            row["decode_ms_per_token"] = ours["decode_ms_per_step"]
            row["roofline_ratio"] = ours["decode_ms_per_step"] / roofline_ms
            line += (f" | decode {ours['decode_ms_per_step']:.1f} ms/token = "
                     f"{row['roofline_ratio']:.2f}x roofline ({roofline_ms:.1f} ms)")
        print(line, flush=True)  # noqa: T201
        results[f"batch_{batch}"] = row
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
