"""Test audio: tones with noise as float samples or encoded by PyAV (wav, flac, mp3, ogg,
m4a), and Qwen3-ASR prompts with their audio items."""

from __future__ import annotations

import io

import av
import numpy as np

from dashserve.contracts.audio_tokens import audio_token_count
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.multimodal.audio import audio_hash, log_mel

# container format, codec, extension
FORMATS = {
    "wav": ("wav", "pcm_s16le"), "flac": ("flac", "flac"), "mp3": ("mp3", "libmp3lame"),
    "ogg": ("ogg", "libopus"), "m4a": ("ipod", "aac"),
}


def tone(seconds: float, seed: int = 0, rate: int = 16000, freq: float = 440.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def encode(samples: np.ndarray, fmt: str = "wav", rate: int = 16000) -> bytes:
    """``samples`` (mono float) as a file of format ``fmt`` (a key of FORMATS)."""
    container_fmt, codec = FORMATS[fmt]
    out = io.BytesIO()
    with av.open(out, "w", format=container_fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        ctx = stream.codec_context
        resampler = av.AudioResampler(format=ctx.format.name, layout="mono", rate=rate,
                                      frame_size=ctx.frame_size or None)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32),
                                           format="flt", layout="mono")
        frame.sample_rate = rate
        for part in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(part):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def asr_prompt(samples: np.ndarray, context: list[int] | None = None,
               offset_tokens: list[int] | None = None) -> tuple[list[int], MultiModalInput]:
    """The Qwen3-ASR prompt around one clip (token ids of an empty system turn by default)."""
    feats, frames = log_mel(samples)
    n = audio_token_count(frames)
    head = [151644, 8948, 198, *(context or []), 151645, 198, 151644, 872, 198, 151669]
    ids = head + [151676] * n + [151670, 151645, 198, 151644, 77091, 198, *(offset_tokens or [])]
    item = MultiModalInput(kind="audio", pixel_values=feats, grid_thw=(0, 0, 0),
                           content_hash=audio_hash(samples), offset=len(head), length=n,
                           audio_frames=frames)
    return ids, item
