"""Video files decoded with PyAV (FFmpeg): the frames a request samples, as RGB images.

``decode_video`` reads the container from memory, refuses what is not a playable video
(undecodable or truncated data, no video stream, audio only, no frames) and anything past
the caps (duration, frames in the file, decoded pixels), then keeps the frames
``sampled_frames`` picks at the requested ``fps``. Every refusal is a 400 naming the part.
Decoding is CPU-bound: run it off the event loop.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import av
import numpy as np

from dashserve.errors import InvalidRequest
from dashserve.multimodal.video import frame_indices, sampled_frames

MAX_DURATION_S = 600.0  # seconds of video a request may send
MAX_FILE_FRAMES = 36_000  # frames a file may hold (10 minutes at 60 fps)
MAX_FRAME_PIXELS = 4096 * 4096  # one decoded frame


@dataclass(frozen=True, slots=True)
class DecodedVideo:
    """The sampled frames of a file ([T, H, W, 3] uint8), their indices and the file's fps."""

    frames: np.ndarray
    indices: list[int]
    video_fps: float
    total_frames: int


def _refuse(where: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {why}", param=where)


def _decode_all(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                where: str) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    for frame in container.decode(stream):
        if frame.width * frame.height > MAX_FRAME_PIXELS:
            raise _refuse(where, f"a frame has {frame.width}x{frame.height} pixels, more than "
                                 f"the {MAX_FRAME_PIXELS} allowed")
        if len(frames) >= MAX_FILE_FRAMES:
            raise _refuse(where, f"the video has more than {MAX_FILE_FRAMES} frames")
        frames.append(frame.to_ndarray(format="rgb24"))
    return frames


def decode_video(data: bytes, fps: float, where: str = "video") -> DecodedVideo:
    """The frames of the file ``data`` sampled at ``fps`` (see the module docstring)."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                kind = "audio only" if container.streams.audio else "no video stream"
                raise _refuse(where, f"the file holds {kind}; send a video file")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            duration = (float(stream.duration * stream.time_base)
                        if stream.duration and stream.time_base else None)
            if duration is None and container.duration:
                duration = container.duration / av.time_base
            if duration is not None and duration > MAX_DURATION_S:
                raise _refuse(where, f"the video lasts {duration:.0f} s, more than the "
                                     f"{MAX_DURATION_S:.0f} s allowed")
            frames = _decode_all(container, stream, where)
    except InvalidRequest:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise _refuse(where, "the data is not a decodable video") from exc
    if not frames:
        raise _refuse(where, "the video has no frames")
    video_fps = float(rate) if rate else 0.0
    if not video_fps or not math.isfinite(video_fps):
        video_fps = len(frames) / duration if duration else 0.0
    if len(frames) / max(video_fps, 1e-9) > MAX_DURATION_S:
        raise _refuse(where, f"the video lasts more than the {MAX_DURATION_S:.0f} s allowed")
    if len({f.shape for f in frames}) != 1:
        raise _refuse(where, "the video's frames change size")
    n = sampled_frames(len(frames), video_fps, fps, where)
    indices = frame_indices(len(frames), n)
    return DecodedVideo(np.stack([frames[i] for i in indices]), indices, video_fps,
                        len(frames))
