"""Test clips written by PyAV: videos of known fps, length and size, and an audio-only file."""

from __future__ import annotations

import io

import av
import numpy as np


def video_clip(seconds: float, fps: int, width: int = 64, height: int = 48,
               fmt: str = "mp4", codec: str = "mpeg4") -> bytes:
    """``seconds * fps`` frames; frame i is filled with the grey level ``7 * i mod 256``."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            image = np.full((height, width, 3), (i * 7) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def audio_clip(seconds: float = 0.5, rate: int = 8000) -> bytes:
    """A silent mono WAV file."""
    out = io.BytesIO()
    with av.open(out, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, int(seconds * rate)), np.int16),
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()
