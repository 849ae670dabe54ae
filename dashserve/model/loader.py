"""Find a checkpoint (local directory or hub id), build the model on it and load its safetensors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from dashserve.model.config import ModelConfig
from dashserve.model.layers import RotaryEmbedding
from dashserve.model.qwen import QwenForCausalLM
from dashserve.model.qwen_audio import QwenAudioForConditionalGeneration
from dashserve.model.qwen_vl import QwenVLForConditionalGeneration, checkpoint_name

log = logging.getLogger(__name__)

DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}


class ModelNotAvailable(RuntimeError):
    """The model can be neither found locally nor downloaded."""


def resolve_model_dir(model: str) -> Path:
    """A local directory as is; otherwise a hub id fetched through huggingface_hub."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotAvailable(f"{path} has no config.json; pass a Hugging Face model directory")
        return path
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelNotAvailable(f"model directory {model!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            model, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"]
        )
    except Exception as exc:  # no network, unknown repo, auth: one clear line
        raise ModelNotAvailable(
            f"cannot download {model!r} from the hub ({type(exc).__name__}); "
            "pass a local model directory instead: --model /path/to/checkpoint"
        ) from exc
    return Path(local)


def pick_dtype(name: str, device: torch.device, wait: bool = True) -> torch.dtype:
    """``auto``: bf16 on GPUs, on CPUs with native bf16 math, and on CPUs where our native
    bf16 kernels build (AVX2: weights widened in registers, half the bytes of fp32 per decode
    step); fp32 elsewhere, where bf16 would fall back to torch's slow bf16 matmul. With
    ``wait=False`` a kernel build that can still happen (in the background) counts."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; use auto, bf16, fp16 or fp32")
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16
    cpu_bf16 = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    has_bf16 = "AVX512" in cpu_bf16 and _cpu_flag("avx512_bf16") or _cpu_flag("amx_bf16")
    if has_bf16:
        return torch.bfloat16
    from dashserve.model.cpu_kernels import decode_ops_expected, decode_ops_module

    native = decode_ops_module() is not None if wait else decode_ops_expected()
    return torch.bfloat16 if native else torch.float32


def _cpu_flag(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def load_model(
    model_dir: Path, config: ModelConfig, dtype: torch.dtype, device: torch.device,
    progress: Callable[[int, int], None] | None = None,
) -> QwenForCausalLM:
    """Build the module tree without allocating random weights, then fill it from safetensors;
    ``progress(done, total)`` is called as tensors arrive."""
    started = time.monotonic()
    with torch.device("meta"):
        model = (QwenVLForConditionalGeneration(config) if config.vision
                 else QwenAudioForConditionalGeneration(config) if config.audio
                 else QwenForCausalLM(config))
    model = model.to(dtype).to_empty(device=device)
    if config.tie_word_embeddings:  # to_empty gives each name its own tensor: tie again
        model.lm_head.weight = model.model.embed_tokens.weight
    _reset_rotary(model, config, device)
    if isinstance(model, QwenAudioForConditionalGeneration):  # a buffer, not in checkpoints
        model.audio_tower.reset_positions(device)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded: set[str] = set()
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelNotAvailable(f"{model_dir} has no *.safetensors weights")
    total = sum(1 for name in params if not (name == "lm_head.weight"
                                              and config.tie_word_embeddings))
    for i, file in enumerate(files, 1):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for stored in f.keys():
                if progress is not None:
                    progress(len(loaded), total)
                name = checkpoint_name(stored)
                if name not in params:
                    if name.startswith("lm_head.") and config.tie_word_embeddings:
                        continue
                    log.debug("skipping unexpected tensor %s", name)
                    continue
                params[name].data.copy_(f.get_tensor(stored))
                loaded.add(name)
        log.info("loaded weights file %d/%d: %s", i, len(files), file.name)
    if progress is not None:
        progress(len(loaded), total)
    if config.tie_word_embeddings:
        loaded.add("lm_head.weight")
    missing = sorted(set(params) - loaded)
    if missing:
        raise ModelNotAvailable(f"checkpoint {model_dir} lacks tensors: {', '.join(missing[:5])}")
    log.info("model ready in %.1f s (%s, %s)", time.monotonic() - started, dtype, device)
    return model.eval()


def _reset_rotary(model: QwenForCausalLM, config: ModelConfig, device: torch.device) -> None:
    fresh = RotaryEmbedding(config.head_dim, config.max_position_embeddings, config.rope_theta)
    rotary = model.model.rotary_emb
    rotary.cos = fresh.cos.to(device)
    rotary.sin = fresh.sin.to(device)
