"""ModelConfig: the architecture numbers of a Qwen checkpoint, read from its config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dashserve.model.audio_config import AUDIO_ARCHITECTURES, AudioConfig, audio_text_config
from dashserve.model.vision_config import (
    VL_ARCHITECTURES,
    VisionConfig,
    mrope_settings,
    read_preprocessor,
    text_config_dict,
)

SUPPORTED_ARCHITECTURES = (
    "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM", *VL_ARCHITECTURES,
    *AUDIO_ARCHITECTURES,
)

# generation_config.json key that marks a demo checkpoint (see ModelConfig.demo_max_new_tokens)
DEMO_MAX_TOKENS_KEY = "dashserve_demo_max_new_tokens"


class UnsupportedModel(ValueError):
    """The checkpoint's architecture or config is not one dashserve can run."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Architecture of one checkpoint. Accepts both the hub layout (top-level ``rope_theta``,
    ``torch_dtype``) and the newer one (``rope_parameters``, ``dtype``)."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    torch_dtype: str
    attention_bias: bool  # q/k/v biases (Qwen2)
    qk_norm: bool  # per-head RMSNorm on q and k (Qwen3)
    eos_token_ids: tuple[int, ...]
    rope_scaling: dict[str, Any] | None = None
    # MoE (Qwen3-MoE); num_experts == 0 means dense
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    # vision-language checkpoints: the ViT, and M-RoPE's split of the rotary frequencies
    vision: VisionConfig | None = None
    mrope_section: tuple[int, ...] = ()
    mrope_interleaved: bool = False
    # speech checkpoints (Qwen3-ASR): the audio encoder
    audio: AudioConfig | None = None
    # demo checkpoints only (``DEMO_MAX_TOKENS_KEY`` in generation_config.json): the output
    # length of a request that sets none, since random weights never emit an end token
    demo_max_new_tokens: int | None = None

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_moe_layer(self, layer_idx: int) -> bool:
        return (
            self.is_moe
            and layer_idx not in self.mlp_only_layers
            and (layer_idx + 1) % self.decoder_sparse_step == 0
        )

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V cache one token takes across all layers, at 2 bytes per value."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * 2

    @classmethod
    def from_dict(
        cls, cfg: dict[str, Any], preprocessor: dict[str, Any] | None = None
    ) -> ModelConfig:
        archs = cfg.get("architectures") or []
        arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if arch is None:
            raise UnsupportedModel(
                f"unsupported architecture {archs or cfg.get('model_type')!r}; "
                f"dashserve runs {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if arch in AUDIO_ARCHITECTURES:
            return replace(cls.from_dict(audio_text_config(cfg, arch)), architecture=arch,
                           audio=AudioConfig.from_dict(cfg, arch))
        if arch in VL_ARCHITECTURES:
            text = text_config_dict(cfg, arch)
            section, interleaved = mrope_settings(text)
            text.pop("rope_scaling", None)
            if isinstance(text.get("rope_parameters"), dict):
                text["rope_parameters"] = {"rope_theta": text["rope_parameters"].get(
                    "rope_theta", text.get("rope_theta", 10000.0))}
            return replace(
                cls.from_dict(text), architecture=arch,
                vision=VisionConfig.from_dict(cfg, arch, preprocessor),
                mrope_section=section, mrope_interleaved=interleaved,
            )
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        rope = cfg.get("rope_parameters") or {}
        rope_theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
        rope_scaling = cfg.get("rope_scaling")
        if rope_scaling is None and rope.get("rope_type", "default") != "default":
            rope_scaling = dict(rope)
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
        is_qwen2 = arch == "Qwen2ForCausalLM"
        return cls(
            architecture=arch,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg.get("intermediate_size", 0)),
            num_hidden_layers=int(cfg["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(cfg.get("num_key_value_heads", heads)),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"),
            attention_bias=bool(cfg.get("attention_bias", is_qwen2)),
            qk_norm=not is_qwen2,
            eos_token_ids=eos_ids,
            rope_scaling=rope_scaling,
            num_experts=int(cfg.get("num_experts") or cfg.get("num_local_experts") or 0),
            num_experts_per_tok=int(cfg.get("num_experts_per_tok", 0)),
            moe_intermediate_size=int(cfg.get("moe_intermediate_size", 0)),
            norm_topk_prob=bool(cfg.get("norm_topk_prob", True)),
            decoder_sparse_step=int(cfg.get("decoder_sparse_step", 1) or 1),
            mlp_only_layers=tuple(cfg.get("mlp_only_layers") or ()),
        )

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> ModelConfig:
        path = Path(model_dir) / "config.json"
        cfg = json.loads(path.read_text())
        config = cls.from_dict(cfg, read_preprocessor(model_dir))
        gen_path = Path(model_dir) / "generation_config.json"
        if gen_path.exists():
            gen = json.loads(gen_path.read_text())
            gen_eos = gen.get("eos_token_id")
            extra = gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else []
            merged = tuple(dict.fromkeys([*config.eos_token_ids, *extra]))
            config = replace(config, eos_token_ids=merged)
            demo_max = gen.get(DEMO_MAX_TOKENS_KEY)
            if isinstance(demo_max, int) and demo_max > 0:
                config = replace(config, demo_max_new_tokens=demo_max)
        return config

