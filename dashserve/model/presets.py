"""Named Qwen model shapes for random-weight checkpoints, as hub-style config.json dicts.

Configs use the layout of real Hugging Face Qwen checkpoints (top-level ``rope_theta`` and
``torch_dtype``). ``torch_dtype`` is the preset's default dtype: bf16 for the published shape,
fp32 for tiny test models so that parity checks can be exact.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from dashserve.model.presets_audio import AUDIO_DESCRIPTIONS, AUDIO_PRESETS
from dashserve.model.presets_vl import VL_DESCRIPTIONS, VL_PRESETS

DTYPE_NAMES = {
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "fp32": "float32", "float32": "float32", "float": "float32",
}

_QWEN_COMMON: dict[str, Any] = {
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "transformers_version": "4.51.0",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


def _qwen3(**overrides: Any) -> dict[str, Any]:
    cfg = {
        **_QWEN_COMMON,
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "max_window_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    cfg.update(overrides)
    return dict(sorted(cfg.items()))


def _qwen2(**overrides: Any) -> dict[str, Any]:
    cfg = {
        **_QWEN_COMMON,
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "max_window_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    cfg.update(overrides)
    return dict(sorted(cfg.items()))


PRESETS: dict[str, dict[str, Any]] = {
    "qwen3-tiny": _qwen3(),
    "qwen3-tiny-untied": _qwen3(tie_word_embeddings=False),
    "qwen3-0.6b": _qwen3(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, max_window_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=40960, torch_dtype="bfloat16",
    ),
    "qwen2.5-tiny": _qwen2(),
    "qwen3-moe-tiny": _qwen3(
        architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe",
        moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
        decoder_sparse_step=1, mlp_only_layers=[], output_router_logits=False,
        router_aux_loss_coef=0.001,
    ),
}

DESCRIPTIONS: dict[str, str] = {
    "qwen3-tiny": "Qwen3 dense, hidden 64, 2 layers, 4/2 heads, tied (~9.8M params)",
    "qwen3-tiny-untied": "qwen3-tiny with a separate lm_head (~19.5M params)",
    "qwen3-0.6b": "the published Qwen3-0.6B shape, bf16 (~596M params, 1.2 GB)",
    "qwen2.5-tiny": "Qwen2.5 dense (q/k/v biases, no q/k norm), hidden 64, 2 layers, tied",
    "qwen3-moe-tiny": "Qwen3-MoE, hidden 64, 2 layers, 8 experts top-2, tied",
}


PRESETS.update(VL_PRESETS)
DESCRIPTIONS.update(VL_DESCRIPTIONS)
PRESETS.update(AUDIO_PRESETS)
DESCRIPTIONS.update(AUDIO_DESCRIPTIONS)


def dtype_name(dtype: str) -> str:
    """``bf16``/``bfloat16``/... -> the config.json spelling (``bfloat16``)."""
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use bf16, fp16 or fp32") from None


def preset_config(name: str, dtype: str | None = None) -> dict[str, Any]:
    """A fresh copy of preset ``name``'s config, with ``torch_dtype`` set to ``dtype`` if given."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    cfg = copy.deepcopy(PRESETS[name])
    if dtype is not None:
        cfg["torch_dtype"] = dtype_name(dtype)
    return cfg


def generation_config(config: dict[str, Any]) -> dict[str, Any]:
    """generation_config.json as the Qwen3 / Qwen2.5 instruct checkpoints ship it."""
    gen: dict[str, Any] = {
        "bos_token_id": config["bos_token_id"],
        "do_sample": True,
        "eos_token_id": [151645, 151643],
        "pad_token_id": 151643,
    }
    if config["model_type"] == "qwen2":
        gen.update(repetition_penalty=1.05, temperature=0.7, top_k=20, top_p=0.8)
    else:
        gen.update(temperature=0.6, top_k=20, top_p=0.95)
    gen["transformers_version"] = config.get("transformers_version", "4.51.0")
    return gen


def head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def param_count(config: dict[str, Any]) -> int:
    """Unique parameters (a tied lm_head counted once)."""
    if "vision_config" in config:
        from dashserve.model.make_vision import flat_text, vision_specs

        return param_count(flat_text(config)) + sum(
            math.prod(shape) for _, shape, _ in vision_specs(config))
    if "audio_config" in config:
        from dashserve.model import make_audio

        return param_count(make_audio.flat_text(config)) + sum(
            math.prod(shape) for _, shape, _ in make_audio.audio_specs(config))
    h, v, layers = config["hidden_size"], config["vocab_size"], config["num_hidden_layers"]
    hd, nq, nkv = head_dim(config), config["num_attention_heads"], config["num_key_value_heads"]
    attn = h * hd * nq * 2 + h * hd * nkv * 2
    if config["model_type"] == "qwen2":
        attn += hd * nq + 2 * hd * nkv  # q/k/v biases
    else:
        attn += 2 * hd  # q_norm, k_norm
    total: int = v * h + h + (0 if config["tie_word_embeddings"] else v * h)
    for i in range(layers):
        total += attn + 2 * h + _mlp_params(config, i)
    return total


def is_moe_layer(config: dict[str, Any], layer: int) -> bool:
    return (
        config.get("num_experts", 0) > 0
        and layer not in (config.get("mlp_only_layers") or [])
        and (layer + 1) % config.get("decoder_sparse_step", 1) == 0
    )


def _mlp_params(config: dict[str, Any], layer: int) -> int:
    h = config["hidden_size"]
    count: int
    if is_moe_layer(config, layer):
        count = config["num_experts"] * (3 * h * config["moe_intermediate_size"] + h)
    else:
        count = 3 * h * config["intermediate_size"]
    return count
