"""Named Qwen VL shapes for random-weight checkpoints, laid out as the published configs are
(Qwen2.5-VL: decoder keys at the top level; Qwen3-VL: under ``text_config``)."""

from __future__ import annotations

from typing import Any

_TOKENS = {
    "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
}


def _qwen25_vl(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
        "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
        "intermediate_size": 128, "max_position_embeddings": 4096, "max_window_layers": 2,
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": None,
        "tie_word_embeddings": True, "torch_dtype": "float32", "transformers_version": "4.51.0",
        "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
        "vision_token_id": 151654, **_TOKENS,
        # head_dim 16: 8 rotary frequencies, split 2 / 3 / 3 over t / h / w
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "vision_config": {
            "depth": 2, "hidden_act": "silu", "hidden_size": 64, "intermediate_size": 128,
            "num_heads": 4, "in_chans": 3, "out_hidden_size": 64, "patch_size": 14,
            "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
            "fullatt_block_indexes": [1], "tokens_per_second": 2, "temporal_patch_size": 2,
        },
    }
    cfg.update(overrides)
    return dict(sorted(cfg.items()))


def _qwen3_vl(text: dict[str, Any] | None = None, vision: dict[str, Any] | None = None,
              **overrides: Any) -> dict[str, Any]:
    text_config: dict[str, Any] = {
        "model_type": "qwen3_vl_text", "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 16, "hidden_act": "silu",
        "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
        "max_position_embeddings": 4096, "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 5000000,
        # interleaved: frequencies cycle t, h, w; sections as the published [24, 20, 20] / 64
        "rope_scaling": {"mrope_interleaved": True, "mrope_section": [4, 2, 2],
                         "rope_type": "default"},
        "tie_word_embeddings": True, "use_cache": True, "vocab_size": 151936,
        **(text or {}),
    }
    vision_config: dict[str, Any] = {
        "model_type": "qwen3_vl", "deepstack_visual_indexes": [0, 1], "depth": 2,
        "hidden_act": "gelu_pytorch_tanh", "hidden_size": 64, "in_channels": 3,
        "initializer_range": 0.02, "intermediate_size": 128, "num_heads": 4,
        "num_position_embeddings": 256, "out_hidden_size": 64, "patch_size": 16,
        "spatial_merge_size": 2, "temporal_patch_size": 2,
        **(vision or {}),
    }
    cfg: dict[str, Any] = {
        "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
        "text_config": dict(sorted(text_config.items())), "tie_word_embeddings": True,
        "torch_dtype": "float32", "transformers_version": "4.57.0",
        "vision_config": dict(sorted(vision_config.items())), **_TOKENS,
    }
    cfg.update(overrides)
    return dict(sorted(cfg.items()))


VL_PRESETS: dict[str, dict[str, Any]] = {
    "qwen2.5-vl-tiny": _qwen25_vl(),
    "qwen3-vl-tiny": _qwen3_vl(),
    "qwen3-vl-2b": _qwen3_vl(
        text={"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
              "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
              "max_position_embeddings": 262144,
              "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20],
                               "rope_type": "default"}},
        vision={"deepstack_visual_indexes": [5, 11, 17], "depth": 24, "hidden_size": 1024,
                "intermediate_size": 4096, "num_heads": 16, "num_position_embeddings": 2304,
                "out_hidden_size": 2048},
        torch_dtype="bfloat16",
    ),
}

VL_DESCRIPTIONS: dict[str, str] = {
    "qwen2.5-vl-tiny": "Qwen2.5-VL, text hidden 64 x 2 layers, ViT 64 x 2 blocks (window + full)",
    "qwen3-vl-tiny": "Qwen3-VL, text hidden 64 x 2 layers, ViT 64 x 2 blocks, DeepStack on both",
    "qwen3-vl-2b": "the published Qwen3-VL-2B shape, bf16 (~2.1B params)",
}

# what the published processors ship: pixels per side of a patch, mean/std, pixel limits
PREPROCESSORS: dict[str, dict[str, Any]] = {
    "qwen2_5_vl": {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "max_pixels": 12845056, "merge_size": 2, "min_pixels": 3136, "patch_size": 14,
        "processor_class": "Qwen2_5_VLProcessor", "resample": 3,
        "rescale_factor": 0.00392156862745098, "temporal_patch_size": 2,
    },
    "qwen3_vl": {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Qwen2VLImageProcessorFast",
        "image_std": [0.5, 0.5, 0.5], "merge_size": 2, "patch_size": 16,
        "processor_class": "Qwen3VLProcessor", "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"longest_edge": 16777216, "shortest_edge": 65536}, "temporal_patch_size": 2,
    },
}
