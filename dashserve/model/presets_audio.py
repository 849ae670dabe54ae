"""Named Qwen3-ASR and Qwen2-Audio shapes for random-weight checkpoints, laid out as
transformers saves them (``audio_config``, ``text_config``, ``audio_token_id`` or
``audio_token_index``)."""

from __future__ import annotations

from typing import Any

from dashserve.model.audio_config import AUDIO_PAD_TOKEN_ID, QWEN2_AUDIO_TOKEN_ID


def _qwen3_asr(text: dict[str, Any] | None = None, audio: dict[str, Any] | None = None,
               **overrides: Any) -> dict[str, Any]:
    text_config: dict[str, Any] = {
        "model_type": "qwen3", "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 16, "hidden_act": "silu",
        "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
        "max_position_embeddings": 4096, "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "tie_word_embeddings": True, "use_cache": True, "vocab_size": 151936,
        **(text or {}),
    }
    audio_config: dict[str, Any] = {
        "model_type": "qwen3_asr_encoder", "activation_function": "gelu", "d_model": 64,
        "downsample_hidden_size": 32, "encoder_attention_heads": 4, "encoder_ffn_dim": 128,
        "encoder_layers": 2, "max_position_embeddings": 13, "n_window": 50,
        # 2 s windows (the published 800 frames are 8 s), so that a few seconds of audio
        # already attend in more than one window
        "n_window_infer": 200, "num_mel_bins": 128, "output_dim": 64,
        **(audio or {}),
    }
    cfg: dict[str, Any] = {
        "architectures": ["Qwen3ASRForConditionalGeneration"], "model_type": "qwen3_asr",
        "audio_config": dict(sorted(audio_config.items())), "audio_token_id": AUDIO_PAD_TOKEN_ID,
        "eos_token_id": [151643, 151645], "pad_token_id": 151645,
        "text_config": dict(sorted(text_config.items())), "tie_word_embeddings": True,
        "torch_dtype": "float32", "transformers_version": "5.25.0",
    }
    cfg.update(overrides)
    return dict(sorted(cfg.items()))


def _qwen2_audio(text: dict[str, Any] | None = None, audio: dict[str, Any] | None = None,
                 **overrides: Any) -> dict[str, Any]:
    text_config: dict[str, Any] = {
        "model_type": "qwen2", "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 64,
        "initializer_range": 0.02, "intermediate_size": 128, "max_position_embeddings": 4096,
        "max_window_layers": 2, "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "sliding_window": None, "tie_word_embeddings": False, "use_cache": True,
        "use_sliding_window": False, "vocab_size": 151936,
        **(text or {}),
    }
    audio_config: dict[str, Any] = {
        "model_type": "qwen2_audio_encoder", "activation_function": "gelu", "d_model": 64,
        "encoder_attention_heads": 4, "encoder_ffn_dim": 128, "encoder_layers": 2,
        # the published 1500 positions: the reference encoder takes exactly 30 s of frames
        "max_source_positions": 1500, "num_mel_bins": 128, "scale_embedding": False,
        **(audio or {}),
    }
    cfg: dict[str, Any] = {
        "architectures": ["Qwen2AudioForConditionalGeneration"], "model_type": "qwen2_audio",
        "audio_config": dict(sorted(audio_config.items())),
        "audio_token_index": QWEN2_AUDIO_TOKEN_ID, "pad_token_id": 151643,
        # untied, as the published checkpoints are (transformers' class does not tie them)
        "text_config": dict(sorted(text_config.items())), "tie_word_embeddings": False,
        "torch_dtype": "float32", "transformers_version": "5.25.0",
    }
    cfg.update(overrides)
    return dict(sorted(cfg.items()))


AUDIO_PRESETS: dict[str, dict[str, Any]] = {
    "qwen3-asr-tiny": _qwen3_asr(),
    "qwen2-audio-tiny": _qwen2_audio(),
}

AUDIO_DESCRIPTIONS: dict[str, str] = {
    "qwen3-asr-tiny": "Qwen3-ASR, text hidden 64 x 2 layers, audio encoder 64 x 2 layers",
    "qwen2-audio-tiny": "Qwen2-Audio, Qwen2 text hidden 64 x 2 layers, Whisper-style audio "
                        "encoder 64 x 2 layers",
}

# what the published Qwen3-ASR processor ships for its feature extractor
FEATURE_EXTRACTOR: dict[str, Any] = {
    "chunk_length": 30, "dither": 0.0, "feature_extractor_type": "Qwen3ASRFeatureExtractor",
    "feature_size": 128, "hop_length": 160, "n_fft": 400, "n_window": 50,
    "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True,
    "sampling_rate": 16000,
}

# what the published Qwen2-Audio processor ships: Whisper's extractor over 30 s windows
QWEN2_AUDIO_FEATURE_EXTRACTOR: dict[str, Any] = {
    "chunk_length": 30, "dither": 0.0, "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 128, "hop_length": 160, "n_fft": 400, "n_samples": 480000,
    "nb_max_frames": 3000, "padding_side": "right", "padding_value": 0.0,
    "processor_class": "Qwen2AudioProcessor", "return_attention_mask": True,
    "sampling_rate": 16000,
}
