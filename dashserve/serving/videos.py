"""The videos of one request: checked, fetched, decoded and preprocessed, then placed.

A video is a file (decoded with PyAV, frames sampled at ``fps``) or a list of frame images
(each read like an image, under the same source rules). The family's video rows (seed 003)
give the per-frame and total pixel bounds. ``video_tokens`` expands a video's placeholder:
Qwen2.5-VL keeps one item whose temporal positions step by the seconds per temporal patch;
Qwen3-VL gets one item per temporal patch, each after its ``<t seconds>`` text, as that
model's processor writes the prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

import torch

from dashserve.contracts.engine_client import VisionInfo
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.errors import InvalidRequest
from dashserve.media.sources import MediaConfig, load_media
from dashserve.multimodal.image import decode_image
from dashserve.multimodal.video import (
    MAX_FRAMES,
    QWEN3_VL,
    QWEN3_VL_PLUS,
    QWEN25_VL,
    VideoSpec,
    check_fps,
    timestamp_text,
)
from dashserve.multimodal.video_file import decode_video
from dashserve.multimodal.video_frames import (
    ProcessedVideo,
    VideoBounds,
    frame_list,
    preprocess_video,
    video_pixel_bounds,
)
from dashserve.serving.profiles import ModelProfile
from dashserve.serving.request import GenerationRequest, VideoPart

MAX_VIDEOS_PER_REQUEST = 4
_PLUS = ("qwen3-vl-plus", "qwen3-vl-flash", "qwen3-vl-235b-a22b")


def video_spec(model: str, profile: ModelProfile, vision: VisionInfo) -> VideoSpec:
    """The served name's video rows (seed 003), else the checkpoint family's."""
    name = model.lower()
    if name.startswith(_PLUS):
        return QWEN3_VL_PLUS
    if profile.family in ("qwen3-vl", "qwen-vl-max", "qwen-vl-plus") \
            or (profile.pixels is None and vision.family == "qwen3-vl"):
        return QWEN3_VL
    return QWEN25_VL


def check_videos(request: GenerationRequest, profile: ModelProfile,
                 vision: VisionInfo | None) -> list[tuple[float, VideoBounds]]:
    """Everything that can be refused before reading a video: (fps, bounds) of each."""
    parts = request.videos
    if not parts:
        return []
    if vision is None:
        raise InvalidRequest(f"the model {request.model!r} does not accept videos; send "
                             "text content only", param=parts[0].where)
    if len(parts) > MAX_VIDEOS_PER_REQUEST:
        raise InvalidRequest(f"a request may hold at most {MAX_VIDEOS_PER_REQUEST} videos; "
                             f"got {len(parts)}", param="messages")
    spec = video_spec(request.model, profile, vision)
    out = []
    for p in parts:
        if isinstance(p.source, tuple) and len(p.source) > MAX_FRAMES:
            raise InvalidRequest(f"{p.where}: a video may hold at most {MAX_FRAMES} frames; "
                                 f"got {len(p.source)}", param=p.where)
        out.append((check_fps(p.fps, p.where), video_pixel_bounds(
            spec, p.min_pixels, p.max_pixels, p.total_pixels, p.where)))
    return out


def _process(datas: list[bytes], part: VideoPart, fps: float, bounds: VideoBounds,
             vision: VisionInfo) -> ProcessedVideo:
    if isinstance(part.source, str):
        clip = decode_video(datas[0], fps, part.where)
        frames, indices, index_fps = clip.frames, clip.indices, clip.video_fps
    else:
        images = [decode_image(d, f"{part.where}.video[{i}]") for i, d in enumerate(datas)]
        frames = frame_list(images, part.where)
        indices, index_fps = list(range(len(images))), fps
    return preprocess_video(frames, indices, fps, bounds, patch_size=vision.patch_size,
                            merge_size=vision.spatial_merge_size, mean=vision.image_mean,
                            std=vision.image_std, index_fps=index_fps)


async def prepare_videos(request: GenerationRequest, profile: ModelProfile,
                         vision: VisionInfo | None, workspace: str | None,
                         config: MediaConfig, executor: Executor
                         ) -> tuple[ProcessedVideo, ...]:
    checked = check_videos(request, profile, vision)
    if not checked:
        return ()
    assert vision is not None
    loop = asyncio.get_running_loop()
    out = []
    for part, (fps, bounds) in zip(request.videos, checked, strict=True):
        sources = [part.source] if isinstance(part.source, str) else list(part.source)
        datas = await asyncio.gather(*(
            load_media(s, part.where, config, workspace=workspace,
                       resolve_oss=request.resolve_oss) for s in sources))
        out.append(await loop.run_in_executor(executor, _process, datas, part, fps, bounds,
                                              vision))
    return tuple(out)


def video_tokens(video: ProcessedVideo, vision: VisionInfo,
                 encode: Callable[[str], list[int]], offset: int
                 ) -> tuple[list[int], list[MultiModalInput]]:
    """The tokens that stand for ``<|vision_start|><|video_pad|><|vision_end|>`` when they
    start at ``offset``, and the video's engine items."""
    pixels = torch.from_numpy(video.pixel_values)
    start, end, pad = vision.vision_start_token_id, vision.vision_end_token_id, \
        vision.video_token_id
    t, h, w = video.grid_thw
    if vision.family != "qwen3-vl":
        item = MultiModalInput("video", pixels, video.grid_thw, video.content_hash,
                               offset + 1, video.num_tokens, video.second_per_grid_t)
        return [start, *[pad] * video.num_tokens, end], [item]
    ids: list[int] = []
    items = []
    rows, per_group = h * w, video.num_tokens // t
    for k, seconds in enumerate(video.timestamps):
        ids.extend(encode(timestamp_text(seconds)))
        ids.append(start)
        items.append(MultiModalInput("video", pixels[k * rows:(k + 1) * rows], (1, h, w),
                                     f"{video.content_hash}:{k}", offset + len(ids),
                                     per_group))
        ids.extend([pad] * per_group)
        ids.append(end)
    return ids, items
