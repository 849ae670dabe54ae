"""The one interface the server uses to reach an engine (real or fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from dashserve.contracts.outputs import EngineEvent, EngineStats
from dashserve.contracts.request import EngineRequest

if TYPE_CHECKING:
    from dashserve.tokenizer import Tokenizer


@dataclass(frozen=True, slots=True)
class VisionInfo:
    """What serving needs to prepare images for a vision model."""

    family: str  # "qwen2.5-vl" | "qwen3-vl"
    patch_size: int  # 14 | 16
    temporal_patch_size: int  # 2
    spatial_merge_size: int  # 2
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    image_token_id: int  # <|image_pad|>
    video_token_id: int  # <|video_pad|>
    vision_start_token_id: int
    vision_end_token_id: int


# ---- speech models (Qwen3-ASR) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What serving needs to prepare audio for a speech model."""

    family: str  # "qwen3-asr" or "qwen2-audio"
    num_mel_bins: int  # 128
    chunk_frames: int  # mel frames per encoder chunk (100: one second; Qwen2-Audio 3000)
    audio_token_id: int  # <|audio_pad|> (Qwen2-Audio: <|AUDIO|>)
    audio_start_token_id: int
    audio_end_token_id: int


# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the serving layer needs to know about the loaded model."""

    name: str  # directory or hub id it was loaded from
    architecture: str  # e.g. "Qwen3ForCausalLM"
    max_model_len: int  # context length in tokens (prompt + output)
    vocab_size: int
    vision: VisionInfo | None = None  # None: the model takes text only
    # output tokens of a request that sets no max_tokens, where the model asks for a default
    # (demo checkpoints); None: as much as the model's profile allows
    default_max_tokens: int | None = None
    audio: AudioInfo | None = None  # speech models: their audio encoder's input


class EngineClient(Protocol):
    """Async front of an engine. ``submit`` yields events until the request finishes.

    Breaking out of the iterator (or cancelling the task consuming it) aborts the request
    and frees its KV blocks. ``submit`` raises ``errors.InvalidRequest`` (``PromptTooLong``
    among them) before anything is scheduled when the request cannot run.
    """

    tokenizer: Tokenizer
    model_info: ModelInfo

    def submit(self, request: EngineRequest) -> AsyncIterator[EngineEvent]: ...

    async def abort(self, request_id: str) -> None: ...

    def stats(self) -> EngineStats: ...

    async def shutdown(self) -> None: ...
