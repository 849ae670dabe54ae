"""The checkpoints benchmarks run on: made once per preset and dtype, cached in the user's cache."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from dashserve.model.make import make_model

log = logging.getLogger("bench")
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def bench_checkpoint(preset: str, model_dir: Path | None = None, dtype: str | None = None) -> Path:
    """``model_dir`` (default ``~/.cache/dashserve/bench/<preset>``), made there if missing."""
    model_dir = model_dir or Path.home() / ".cache" / "dashserve" / "bench" / preset
    if not (model_dir / "config.json").exists():
        log.info("making %s in %s (once)", preset, model_dir)
        make_model(preset, model_dir, seed=0, dtype=dtype)
    return model_dir
