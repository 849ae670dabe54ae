"""Checking a request's audio clips against its prompt (speech models; 1-D positions)."""

from __future__ import annotations

from collections.abc import Sequence

from dashserve.contracts.multimodal import MultiModalInput
from dashserve.errors import InvalidRequest
from dashserve.model.audio_config import AudioConfig


def check_audio_inputs(
    audio: AudioConfig, prompt: list[int], items: Sequence[MultiModalInput]
) -> tuple[MultiModalInput, ...]:
    """The clips sorted by offset; InvalidRequest when one does not fit the model or the
    prompt, or when the prompt holds placeholder tokens no clip fills."""
    end = 0
    ordered = tuple(sorted(items, key=lambda it: it.offset))
    for item in ordered:
        if item.kind != "audio":
            raise InvalidRequest(f"the model does not accept {item.kind}s", param="input")
        frames = item.audio_frames
        chunks = -(-frames // audio.chunk_frames)
        if frames < 1 or item.pixel_values.dim() != 2 or \
                item.pixel_values.shape[0] != audio.num_mel_bins or \
                item.pixel_values.shape[1] < chunks * audio.chunk_frames:
            raise InvalidRequest(f"audio features of shape {tuple(item.pixel_values.shape)} do not hold "
                f"{frames} frames of {audio.num_mel_bins} mel bins in whole chunks", param="input")
        if frames > audio.chunk_frames and audio.family == "qwen2-audio":
            raise InvalidRequest(f"{frames} mel frames exceed the encoder's window of "
                                 f"{audio.chunk_frames}", param="input")
        if item.length != audio.token_count(frames):
            raise InvalidRequest(f"{frames} mel frames need {audio.token_count(frames)}"
                f" placeholder tokens, not {item.length}", param="input")
        if item.offset < end or item.offset + item.length > len(prompt) or any(
                tok != audio.audio_token_id
                for tok in prompt[item.offset:item.offset + item.length]):
            raise InvalidRequest(f"the prompt lacks the {item.length} audio placeholder tokens at "
                f"{item.offset}", param="input")
        end = item.offset + item.length
    if sum(tok == audio.audio_token_id for tok in prompt) != sum(it.length for it in ordered):
        raise InvalidRequest("the prompt has audio placeholder tokens without audio", param="input")
    return ordered
