"""Qwen2.5-VL and Qwen3-VL: the Qwen decoder plus a vision encoder (``visual``), with module
names mirroring the Hugging Face checkpoints (``visual.*``, ``model.*``, ``lm_head``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dashserve.model.config import ModelConfig
from dashserve.model.qwen import QwenForCausalLM
from dashserve.model.vision_layers import Grid
from dashserve.model.vision_qwen3 import Qwen3VisionTransformer
from dashserve.model.vision_qwen25 import Qwen25VisionTransformer

# transformers 5 saves the decoder under model.language_model and the encoder under
# model.visual; the published checkpoints use model.* and visual.*
WEIGHT_RENAMES = (("model.language_model.", "model."), ("model.visual.", "visual."),
                  ("model.audio_tower.", "audio_tower."),
                  ("model.multi_modal_projector.", "multi_modal_projector."))


def checkpoint_name(name: str) -> str:
    """A tensor name of either layout in the module tree's spelling."""
    for old, new in WEIGHT_RENAMES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


class QwenVLForConditionalGeneration(QwenForCausalLM):
    """The decoder of ``QwenForCausalLM`` fed, at image placeholders, by the encoder's rows."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        assert config.vision is not None
        self.visual: Qwen25VisionTransformer | Qwen3VisionTransformer
        if config.vision.family == "qwen3-vl":
            self.visual = Qwen3VisionTransformer(config.vision)
        else:
            self.visual = Qwen25VisionTransformer(config.vision)

    def encode(
        self, pixels: Sequence[torch.Tensor], grids: Sequence[Grid]
    ) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Encode items packed in one pass; per item its merged rows and DeepStack rows."""
        dtype = self.model.embed_tokens.weight.dtype
        device = self.model.embed_tokens.weight.device
        packed = torch.cat([p.to(device, dtype) for p in pixels])
        rows, deep = self.visual(packed, grids)
        merge = self.config.vision.spatial_merge_size**2  # type: ignore[union-attr]
        sizes = [t * h * w // merge for t, h, w in grids]
        per_rows = rows.split(sizes)
        per_deep = [d.split(sizes) for d in deep]
        return [(per_rows[i], [d[i] for d in per_deep]) for i in range(len(grids))]
