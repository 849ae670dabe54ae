"""VisionConfig: the vision encoder of a Qwen VL checkpoint, read from its config.json and
preprocessor_config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VL_ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": "qwen2.5-vl",
    "Qwen3VLForConditionalGeneration": "qwen3-vl",
}
# the decoder each VL family wraps: Qwen2.5-VL's is Qwen2 (q/k/v biases), Qwen3-VL's is Qwen3
TEXT_ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": "Qwen2ForCausalLM",
    "Qwen3VLForConditionalGeneration": "Qwen3ForCausalLM",
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True, slots=True)
class VisionConfig:
    """Shape of the ViT, its merger and the special tokens that place images in a prompt."""

    family: str  # "qwen2.5-vl" | "qwen3-vl"
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    in_channels: int
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    # Qwen2.5-VL: window attention, full attention in some blocks; time scale of video M-RoPE
    window_size: int = 0
    fullatt_block_indexes: tuple[int, ...] = ()
    tokens_per_second: float = 0.0
    # Qwen3-VL: learned position table, DeepStack mergers
    num_position_embeddings: int = 0
    deepstack_visual_indexes: tuple[int, ...] = ()

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @classmethod
    def from_dict(
        cls, cfg: dict[str, Any], architecture: str, preprocessor: dict[str, Any] | None = None
    ) -> VisionConfig:
        v = cfg["vision_config"]
        family = VL_ARCHITECTURES[architecture]
        pre = preprocessor or {}
        qwen3 = family == "qwen3-vl"
        default_mean, default_std = ((0.5,) * 3, (0.5,) * 3) if qwen3 else (CLIP_MEAN, CLIP_STD)
        text = cfg.get("text_config") or {}
        return cls(
            family=family,
            depth=int(v["depth"]),
            hidden_size=int(v.get("hidden_size") or v.get("embed_dim")),
            intermediate_size=int(v["intermediate_size"]),
            num_heads=int(v["num_heads"]),
            out_hidden_size=int(v.get("out_hidden_size") or text.get("hidden_size")
                                or cfg["hidden_size"]),
            patch_size=int(v.get("patch_size", 16 if qwen3 else 14)),
            temporal_patch_size=int(v.get("temporal_patch_size", 2)),
            spatial_merge_size=int(v.get("spatial_merge_size", 2)),
            in_channels=int(v.get("in_channels") or v.get("in_chans") or 3),
            image_token_id=int(cfg.get("image_token_id", 151655)),
            video_token_id=int(cfg.get("video_token_id", 151656)),
            vision_start_token_id=int(cfg.get("vision_start_token_id", 151652)),
            vision_end_token_id=int(cfg.get("vision_end_token_id", 151653)),
            image_mean=tuple(pre.get("image_mean", default_mean)),
            image_std=tuple(pre.get("image_std", default_std)),
            window_size=int(v.get("window_size", 0 if qwen3 else 112)),
            fullatt_block_indexes=tuple(v.get("fullatt_block_indexes") or ()),
            tokens_per_second=float(v.get("tokens_per_second", 0 if qwen3 else 2)),
            num_position_embeddings=int(v.get("num_position_embeddings", 2304 if qwen3 else 0)),
            deepstack_visual_indexes=tuple(v.get("deepstack_visual_indexes") or ()),
        )


def read_preprocessor(model_dir: str | Path) -> dict[str, Any] | None:
    path = Path(model_dir) / "preprocessor_config.json"
    return json.loads(path.read_text()) if path.exists() else None


def text_config_dict(cfg: dict[str, Any], architecture: str) -> dict[str, Any]:
    """The decoder's config as a flat text-model dict: hub checkpoints of Qwen2.5-VL keep it at
    the top level, Qwen3-VL (and transformers 5) under ``text_config``."""
    text = {k: v for k, v in cfg.items() if k not in ("vision_config", "text_config")}
    text.update(cfg.get("text_config") or {})
    text["architectures"] = [TEXT_ARCHITECTURES[architecture]]
    if "tie_word_embeddings" in cfg:
        text["tie_word_embeddings"] = cfg["tie_word_embeddings"]
    return text


def mrope_settings(text: dict[str, Any]) -> tuple[tuple[int, ...], bool]:
    """(mrope_section, interleaved) from ``rope_scaling`` or ``rope_parameters``."""
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    section = tuple(int(s) for s in rope.get("mrope_section") or ())
    return section, bool(rope.get("mrope_interleaved", False))
