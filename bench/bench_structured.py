"""Structured-output costs: grammar compile (cold and cached) and per-step mask cost at batch 8.

Usage: python bench/bench_structured.py [--model-dir DIR] [--batch 8] [--steps 200] [--json OUT]

Uses the schemas of tests/sampling/test_structured.py. "Cold" is the first compile of a
schema in a fresh compiler (validation + matcher construction); "first mask" is the first
mask computed from it (llguidance builds lexer states lazily); "cached" is a second compile
(grammar text + hash + cache lookup). The step benchmark keeps ``--batch`` constrained rows
alive (random walks over allowed tokens, restarted when they end) and times ``apply_masks``
on [batch, 151936] logits against an unconstrained step (``apply_masks`` with no rows), and
splits it into the mask fill (row by row, and through an llguidance executor) and the
unpack/-inf writes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import llguidance
import numpy as np
import torch

from dashserve.contracts.params import StructuredOutputSpec
from dashserve.sampling.structured import _NEG_INF_BITS as NEG_INF_BITS
from dashserve.sampling.structured import (
    GrammarCompiler,
    GrammarMatcher,
    apply_masks,
    bitmask_words,
    disallowed_from_bitmask,
)
from dashserve.tokenizer import Tokenizer

VOCAB = 151936
ROOT = Path(__file__).resolve().parent.parent


def load_schemas() -> dict[str, dict[str, Any]]:
    path = ROOT / "tests" / "sampling" / "test_structured.py"
    spec = importlib.util.spec_from_file_location("schemas_module", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.SCHEMAS)


def tokenizer_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    from dashserve.model.make import make_model

    return make_model("qwen3-tiny", Path(tempfile.mkdtemp()) / "qwen3-tiny")


def ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"median_ms": round(statistics.median(values) * 1e3, 4),
            "p90_ms": round(values[int(0.9 * (len(values) - 1))] * 1e3, 4),
            "max_ms": round(values[-1] * 1e3, 4)}


def bench_compile(tok: Tokenizer, schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    compiler = GrammarCompiler(tok, VOCAB)
    build_s = time.perf_counter() - t0
    cold, first_mask, cached = [], [], []
    bitmask = torch.empty((1, bitmask_words(VOCAB)), dtype=torch.int32)
    for schema in schemas.values():
        spec = StructuredOutputSpec(json_schema=schema)
        t0 = time.perf_counter()
        compiled = compiler.compile(spec)
        cold.append(time.perf_counter() - t0)
        matcher = compiler.matcher(compiled)
        t0 = time.perf_counter()
        matcher.fill_bitmask(bitmask, 0)
        first_mask.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert compiler.compile(spec) is compiled
        cached.append(time.perf_counter() - t0)
    return {"tokenizer_build_s": round(build_s, 3), "schemas": len(schemas),
            "compile_cold": ms(cold), "first_mask": ms(first_mask), "compile_cached": ms(cached)}


class Lanes:
    """``n`` constrained samples that advance by random allowed tokens and restart at the end."""

    def __init__(
        self, compiler: GrammarCompiler, specs: list[StructuredOutputSpec], n: int, seed: int
    ) -> None:
        self.compiler = compiler
        self.compiled = [compiler.compile(s) for s in specs]
        self.rng = random.Random(seed)
        self.matchers = [self._fresh(i) for i in range(n)]
        self.restarts = 0

    def _fresh(self, i: int) -> GrammarMatcher:
        return self.compiler.matcher(self.compiled[i % len(self.compiled)])

    def advance(self, logits: torch.Tensor) -> None:
        eos = self.compiler.eos_token_id
        for i, matcher in enumerate(self.matchers):
            allowed = torch.nonzero(~torch.isneginf(logits[i])).flatten()
            if bool((allowed == eos).any()) and (self.rng.random() < 0.3 or allowed.numel() == 1):
                self.matchers[i] = self._fresh(i)
                self.restarts += 1
                continue
            token = int(allowed[self.rng.randrange(allowed.numel())])
            if token == eos or not matcher.accept_token(token):
                self.matchers[i] = self._fresh(i)
                self.restarts += 1


def timed(sink: list[float], run: Any) -> None:
    t0 = time.perf_counter()
    run()
    sink.append(time.perf_counter() - t0)


def bench_steps(compiler: GrammarCompiler, specs: list[StructuredOutputSpec], batch: int,
                steps: int, dtype: torch.dtype, par_threads: int) -> dict[str, Any]:
    lanes = Lanes(compiler, specs, batch, seed=0)
    rows = list(range(batch))
    base = torch.randn(batch, VOCAB).to(dtype)
    t: dict[str, list[float]] = {k: [] for k in ("masked", "nothing", "par", "serial", "unpack")}
    bitmask = torch.empty((batch, bitmask_words(VOCAB)), dtype=torch.int32)
    executor = llguidance.LLExecutor(par_threads)
    view_dtype, neg_inf = NEG_INF_BITS[dtype]

    def fill_parallel() -> None:
        pairs = [(m._m, i) for i, m in enumerate(lanes.matchers)]
        executor.unsafe_compute_mask_ptr(pairs, bitmask.data_ptr(), bitmask.shape[1] * 4, batch)

    def unpack_and_mask() -> None:
        disallowed = disallowed_from_bitmask(bitmask, VOCAB)
        view = scratch.view(view_dtype).numpy()
        for i in rows:
            np.copyto(view[i], neg_inf, where=disallowed[i])

    for step in range(steps):
        logits, scratch = base.clone(), base.clone()
        timed(t["nothing"], lambda logits=logits: apply_masks(logits, [], []))
        # the same states three times: alternate the order so no variant always goes first
        fills = [("par", fill_parallel),
                 ("serial", lambda: [m.fill_bitmask(bitmask, i) for i, m in enumerate(lanes.matchers)]),
                 ("masked", lambda logits=logits: apply_masks(logits, rows, lanes.matchers))]
        for key, run in fills if step % 2 else reversed(fills):
            timed(t[key], run)
        timed(t["unpack"], unpack_and_mask)
        lanes.advance(logits)
    return {"batch": batch, "steps": steps, "dtype": str(dtype).removeprefix("torch."),
            "restarts": lanes.restarts, "apply_masks": ms(t["masked"]),
            "no_constrained_rows": ms(t["nothing"]), "fill_row_by_row": ms(t["serial"]),
            f"fill_executor_{par_threads}_threads": ms(t["par"]), "unpack_and_mask": ms(t["unpack"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="checkpoint or tokenizer directory (default: make qwen3-tiny)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None,
                        help="mask-fill threads (default: the compiler's own choice)")
    parser.add_argument("--par-threads", type=int, default=2, help="threads of the compared executor")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    tok = Tokenizer.from_dir(tokenizer_dir(args.model_dir))
    schemas = load_schemas()
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    results["compile"] = bench_compile(tok, schemas)
    compiler = GrammarCompiler(tok, VOCAB, num_threads=args.threads)
    results["fill_threads"] = compiler.num_threads
    specs = [StructuredOutputSpec(json_schema=s) for s in schemas.values()]
    specs.append(StructuredOutputSpec(json_object=True))
    for dtype in (torch.bfloat16, torch.float32):
        results[f"step_{dtype}".replace("torch.", "")] = bench_steps(
            compiler, specs, args.batch, args.steps, dtype, args.par_threads)
    text = json.dumps(results, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
