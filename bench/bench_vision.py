"""Image requests on the engine against transformers `generate`, side by side in one run.

Usage: python bench/bench_vision.py [--preset qwen3-vl-2b] [--concurrency 1 8] [--output 64]

Each request is one 448x448 image (random pixels, patchified as the Qwen VL processors do)
plus a short question; every request has its own image, EOS is ignored so each produces
exactly --output tokens. Reports requests/s and output tok/s for both systems at each
concurrency, then our time to first token for a new image against the same image again
behind a different system prompt (the encoder cache, no prefix-cache hit) and with another
question after the same system prompt and image (the prefix cache too).
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
from dashserve.contracts.multimodal import MultiModalInput  # noqa: E402
from dashserve.contracts.params import SamplingParams  # noqa: E402
from dashserve.contracts.request import EngineRequest
from dashserve.engine.engine import EngineConfig, LLMEngine  # noqa: E402
from tests.utils.vision import build_prompt, random_image  # noqa: E402

log = logging.getLogger("bench")
SIDE = 448


QUESTIONS = ([3838, 374, 304, 419, 2168, 30], [74785, 279, 7987, 304, 419, 2168, 13])


def request(
    seed: int, image_seed: int, patch: int, question: int = 0
) -> tuple[list[int], list[MultiModalInput]]:
    """A chat prompt: a system prompt distinct per ``seed``, the image of ``image_seed``, then
    one of two questions."""
    lead = torch.randint(1000, 150000, (8,), generator=torch.Generator().manual_seed(seed))
    return build_prompt([
        [151644, 8948, 198, *lead.tolist(), 151645, 198, 151644, 872, 198],
        random_image(image_seed, SIDE, SIDE),
        [*QUESTIONS[question], 151645, 198, 151644, 77091, 198],
    ], patch)


def run_ours(engine: LLMEngine, reqs: list, output: int) -> dict[str, float]:
    params = SamplingParams(temperature=0.0, max_tokens=output, ignore_eos=True)
    start = time.perf_counter()
    for i, (ids, items) in enumerate(reqs):
        engine.add_request(EngineRequest(f"bench-{time.time_ns()}-{i}", ids, params, tuple(items)))
    first = None
    while engine.has_unfinished():
        if engine.step() and first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    return {"total_s": total, "req_s": len(reqs) / total, "tok_s": len(reqs) * output / total,
            "first_token_s": first or total}


def run_transformers(
    model_dir: Path, dtype: torch.dtype, reqs: list, output: int
) -> dict[str, float]:
    from transformers import Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).eval()
    ids = torch.tensor([r[0] for r in reqs])  # same lengths: no padding
    items = [it for r in reqs for it in r[1]]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "pixel_values": torch.cat([it.pixel_values for it in items]).to(dtype),
              "image_grid_thw": torch.tensor([it.grid_thw for it in items]),
              "mm_token_type_ids": (ids == 151655).int()}
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(**inputs, max_new_tokens=output, min_new_tokens=output, do_sample=False,
                       pad_token_id=151643)
        total = time.perf_counter() - t0
    return {"total_s": total, "req_s": len(reqs) / total, "tok_s": len(reqs) * output / total}


def ttft(engine: LLMEngine, ids: list[int], items: list[MultiModalInput]) -> float:
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    engine.add_request(EngineRequest(f"ttft-{time.time_ns()}", ids, params, tuple(items)))
    start = time.perf_counter()
    while engine.has_unfinished():
        engine.step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="qwen3-vl-2b")
    ap.add_argument("--model-dir", type=Path, default=None, help="reuse/make the model here")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--output", type=int, default=64)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    model_dir = bench_checkpoint(args.preset, args.model_dir, args.dtype)
    dtype = TORCH_DTYPES[args.dtype]
    most = max(args.concurrency)
    engine = LLMEngine(EngineConfig(
        model=str(model_dir), dtype=args.dtype, max_model_len=512 + args.output,
        max_num_seqs=most, max_num_batched_tokens=256 * most, kv_cache_gb=2.0,
    ))
    patch = engine.model_config.vision.patch_size
    results: dict[str, object] = {"preset": args.preset, "dtype": args.dtype,
                                  "threads": torch.get_num_threads(), "side": SIDE,
                                  "output": args.output}
    run_ours(engine, [request(10_000, 10_000, patch)], 2)  # warm-up
    seed = 0
    batches = {}
    for n in args.concurrency:  # every request its own image and text: no cache hit
        batches[n] = [request(seed + i, seed + i, patch) for i in range(n)]
        seed += n
        results[f"ours_{n}"] = run_ours(engine, batches[n], args.output)
    t_new = ttft(engine, *request(500, 500, patch))
    # the same image behind another system prompt: the encoder cache, no prefix-cache hit
    t_encoder = ttft(engine, *request(501, 500, patch))
    # the same system prompt and image, another question: the prefix cache up to the question
    t_prefix = ttft(engine, *request(500, 500, patch, question=1))
    results["ttft"] = {"new_image_s": t_new, "repeated_image_s": t_encoder,
                       "repeated_image_new_question_s": t_prefix,
                       "repeated_ratio": t_encoder / t_new, "prefix_ratio": t_prefix / t_new}
    line = (f"TTFT: new image {t_new:.2f} s | same image, other system prompt {t_encoder:.2f} s"
            f" ({t_encoder / t_new:.2f}x) | same image, another question {t_prefix:.2f} s"
            f" ({t_prefix / t_new:.2f}x)")
    print(line, flush=True)  # noqa: T201
    del engine
    for n in args.concurrency:
        ours = results[f"ours_{n}"]
        line = f"{n} concurrent: dashserve {ours['req_s']:.3f} req/s, {ours['tok_s']:.2f} tok/s"
        if not args.skip_transformers:
            theirs = run_transformers(model_dir, dtype, batches[n], args.output)
            results[f"transformers_{n}"] = theirs
            results[f"ratio_{n}"] = ours["tok_s"] / theirs["tok_s"]
            line += (f" | transformers {theirs['req_s']:.3f} req/s, {theirs['tok_s']:.2f} tok/s"
                     f" | ratio {ours['tok_s'] / theirs['tok_s']:.2f}x")
        print(line, flush=True)  # noqa: T201
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
