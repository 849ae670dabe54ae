"""Speech models: a Qwen decoder fed, at audio placeholder tokens, by the audio encoder's
projected rows. Qwen3-ASR (Qwen3 decoder, ``<|audio_pad|>``) and Qwen2-Audio (Qwen2 decoder,
Whisper's encoder, ``<|AUDIO|>``); module names as the checkpoints': ``audio_tower.*``,
``multi_modal_projector.*``, ``model.*``, ``lm_head``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dashserve.model.audio_qwen2 import Qwen2AudioEncoder, Qwen2AudioProjector
from dashserve.model.audio_qwen3_asr import AudioProjector, Qwen3ASRAudioEncoder
from dashserve.model.config import ModelConfig
from dashserve.model.qwen import QwenForCausalLM


class QwenAudioForConditionalGeneration(QwenForCausalLM):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        assert config.audio is not None
        self.audio_tower: Qwen3ASRAudioEncoder | Qwen2AudioEncoder
        self.multi_modal_projector: nn.Module
        if config.audio.family == "qwen2-audio":
            self.audio_tower = Qwen2AudioEncoder(config.audio)
            self.multi_modal_projector = Qwen2AudioProjector(config.audio)
        else:
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
        sizes = [audio.token_count(n) for n in frames]
        return list(rows.split(sizes))
