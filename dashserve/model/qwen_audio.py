"""Qwen3-ASR: the Qwen3 decoder fed, at ``<|audio_pad|>`` placeholders, by the audio encoder's
projected rows (module names as the checkpoints': ``audio_tower.*``,
``multi_modal_projector.*``, ``model.*``, ``lm_head``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dashserve.contracts.multimodal import audio_token_count
from dashserve.model.audio_qwen3_asr import AudioProjector, Qwen3ASRAudioEncoder
from dashserve.model.config import ModelConfig
from dashserve.model.qwen import QwenForCausalLM


class QwenAudioForConditionalGeneration(QwenForCausalLM):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        assert config.audio is not None
        self.audio_tower = Qwen3ASRAudioEncoder(config.audio)
        self.multi_modal_projector = AudioProjector(config.audio)

    def encode_audio(
        self, features: Sequence[torch.Tensor], frames: Sequence[int]
    ) -> list[torch.Tensor]:
        """Clips encoded in one packed pass; per clip its rows ([tokens, hidden])."""
        audio = self.config.audio
        assert audio is not None
        dtype = self.model.embed_tokens.weight.dtype
        device = self.model.embed_tokens.weight.device
        rows = self.multi_modal_projector(
            self.audio_tower([f.to(device, dtype) for f in features], list(frames)))
        sizes = [audio_token_count(n, audio.chunk_frames) for n in frames]
        return list(rows.split(sizes))
