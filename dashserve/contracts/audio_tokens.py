"""How many placeholder tokens an audio clip becomes: one rule for the model, the engine's
checks and serving's usage (no torch here: the command line imports it)."""

from __future__ import annotations


def post_cnn_length(frames: int) -> int:
    """Tokens three (kernel 3, stride 2, padding 1) convolutions leave of ``frames`` frames."""
    for _ in range(3):
        frames = (frames - 1) // 2 + 1 if frames > 0 else 0
    return frames


def audio_token_count(frames: int, chunk_frames: int = 100, family: str = "qwen3-asr") -> int:
    """Placeholder tokens ``frames`` mel frames become. Qwen3-ASR: each chunk convolved on
    its own; Qwen2-Audio: one stride-2 convolution, then pooling by 2 (about 25 a second)."""
    if family == "qwen2-audio":
        return (((frames - 1) // 2 + 1) - 2) // 2 + 1 if frames > 0 else 0
    full, rest = divmod(frames, chunk_frames)
    return full * post_cnn_length(chunk_frames) + post_cnn_length(rest)
