"""EngineConfig: what an engine is asked to run, validated once and then frozen."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Validated once; derived values (KV blocks, context length) live on the runner."""

    model: str
    dtype: str = "auto"
    device: str = "auto"
    max_model_len: int | None = None
    kv_cache_gb: float | None = None  # None: 4 GiB on CPU, most free memory on GPU
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512
    enable_prefix_caching: bool = True
    pack_weights: bool = True  # CPU bf16: faster decode layers (native kernels or packed oneDNN)
    encoder_cache_tokens: int = 16384  # vision models: encoder output rows kept for reuse
    # CPU native kernels not built yet: "wait" builds them first; "background" starts on the
    # torch path (``kernels_pending``) and switches in ``attach_kernels`` once they are built
    kernels: str = "wait"
