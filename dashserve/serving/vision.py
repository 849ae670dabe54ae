"""The images of one request: checked, fetched, preprocessed off the event loop, placed.

``ImagePreparer.prepare`` refuses images sent to a model without a vision encoder, more
images than the per-request cap and pixel bounds outside the family's range, all before
any byte is fetched; it then reads every image concurrently and decodes, resizes and
patchifies them in a thread pool. ``place_images`` expands each ``<|image_pad|>`` the chat
template wrote into as many placeholder tokens as the image has, and says where each image
sits (``MultiModalInput.offset``/``length``) for the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from dashserve.contracts.engine_client import VisionInfo
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.errors import InvalidRequest
from dashserve.media.sources import MediaConfig, load_media
from dashserve.multimodal.image import (
    FAMILY_SPECS,
    PixelSpec,
    ProcessedImage,
    decode_image,
    pixel_bounds,
    preprocess_image,
)
from dashserve.multimodal.video_frames import ProcessedVideo
from dashserve.serving.asr import PreparedClip
from dashserve.serving.profiles import ModelProfile
from dashserve.serving.request import GenerationRequest, ImagePart
from dashserve.serving.videos import check_videos, prepare_videos, video_tokens

MAX_IMAGES_PER_REQUEST = 32
# <|vision_start|> and <|vision_end|> around each image, billed as image tokens (as
# DashScope's image token formula counts them).
IMAGE_MARKER_TOKENS = 2


@dataclass(frozen=True, slots=True)
class PreparedImages:
    """A request's images, in prompt order; empty for text requests."""

    images: tuple[ProcessedImage, ...] = ()
    videos: tuple[ProcessedVideo, ...] = ()
    clips: tuple[PreparedClip, ...] = ()  # audio, for speech models

    @property
    def image_tokens(self) -> int:
        """Image tokens as billed: the placeholders plus the two markers of each image."""
        return sum(i.num_tokens + IMAGE_MARKER_TOKENS for i in self.images)

    @property
    def video_tokens(self) -> int:
        """Video tokens: the placeholders plus two markers per video."""
        return sum(v.num_tokens + IMAGE_MARKER_TOKENS for v in self.videos)

    @property
    def any(self) -> bool:
        return bool(self.images or self.videos or self.clips)


def pixel_spec(profile: ModelProfile, vision: VisionInfo) -> PixelSpec:
    """The served family's pixel budget, else the checkpoint family's."""
    return profile.pixels or FAMILY_SPECS.get(vision.family, FAMILY_SPECS["qwen2.5-vl"])


def _process(data: bytes, part: ImagePart, vision: VisionInfo, bounds: tuple[int, int]
             ) -> ProcessedImage:
    image = decode_image(data, part.where, rotate=part.rotate)
    return preprocess_image(
        image, patch_size=vision.patch_size, merge_size=vision.spatial_merge_size,
        temporal_patch_size=vision.temporal_patch_size, mean=vision.image_mean,
        std=vision.image_std, min_pixels=bounds[0], max_pixels=bounds[1])


@dataclass
class ImagePreparer:
    """Turns a request's image parts into preprocessed images (see the module docstring)."""

    config: MediaConfig = field(default_factory=MediaConfig)
    max_images: int = MAX_IMAGES_PER_REQUEST
    executor: Executor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=2, thread_name_prefix="dashserve-image"))

    def check(self, request: GenerationRequest, profile: ModelProfile,
              vision: VisionInfo | None) -> list[tuple[int, int]]:
        """Everything that can be refused without reading an image; the pixel bounds."""
        check_videos(request, profile, vision)
        parts = request.images
        if not parts:
            return []
        if vision is None:
            raise InvalidRequest(f"the model {request.model!r} does not accept images; send "
                                 "text content only", param=parts[0].where)
        if len(parts) > self.max_images:
            raise InvalidRequest(f"a request may hold at most {self.max_images} images; got "
                                 f"{len(parts)}", param="messages")
        spec = pixel_spec(profile, vision)
        high = bool(request.params.vl_high_resolution_images)
        return [pixel_bounds(spec, p.min_pixels, p.max_pixels, high_resolution=high,
                             where=p.where) for p in parts]

    async def prepare(self, request: GenerationRequest, profile: ModelProfile,
                      vision: VisionInfo | None, workspace: str | None) -> PreparedImages:
        bounds = self.check(request, profile, vision)
        videos = await prepare_videos(request, profile, vision, workspace, self.config,
                                      self.executor)
        if not bounds:
            return PreparedImages(videos=videos)
        assert vision is not None
        parts = request.images
        datas = await asyncio.gather(*(
            load_media(p.source, p.where, self.config, workspace=workspace,
                       resolve_oss=request.resolve_oss) for p in parts))
        loop = asyncio.get_running_loop()
        processed = await asyncio.gather(*(
            loop.run_in_executor(self.executor, _process, data, part, vision, bound)
            for data, part, bound in zip(datas, parts, bounds, strict=True)))
        return PreparedImages(tuple(processed), videos)


def place_images(prompt_ids: Sequence[int], images: Sequence[ProcessedImage],
                 vision: VisionInfo | None, videos: Sequence[ProcessedVideo] = (),
                 encode: Callable[[str], list[int]] | None = None
                 ) -> tuple[list[int], list[MultiModalInput]]:
    """Prompt ids with each image's and video's placeholder expanded, and the engine's
    inputs (``encode`` writes a Qwen3-VL video's timestamps)."""
    if (not images and not videos) or vision is None:
        return list(prompt_ids), []
    pad, vpad = vision.image_token_id, vision.video_token_id
    spots = sum(1 for t in prompt_ids if t == pad)
    vspots = sum(1 for t in prompt_ids if t == vpad)
    if spots != len(images) or vspots != len(videos):
        raise InvalidRequest("the prompt's image and video placeholders do not match the "
                             f"images and videos sent ({spots} for {len(images)}, {vspots} "
                             f"for {len(videos)})", param="messages")
    ids: list[int] = []
    inputs: list[MultiModalInput] = []
    next_image, next_video = iter(images), iter(videos)
    k = 0
    while k < len(prompt_ids):
        token = prompt_ids[k]
        if token == pad:
            image = next(next_image)
            inputs.append(MultiModalInput(
                kind="image", pixel_values=torch.from_numpy(image.pixel_values),
                grid_thw=image.grid_thw, content_hash=image.content_hash, offset=len(ids),
                length=image.num_tokens))
            ids.extend([pad] * image.num_tokens)
        elif token == vpad:
            if not ids or ids[-1] != vision.vision_start_token_id or k + 1 >= len(prompt_ids) \
                    or prompt_ids[k + 1] != vision.vision_end_token_id:
                raise InvalidRequest("the prompt's video placeholder is not wrapped in vision "
                                     "markers", param="messages")
            ids.pop()
            tokens, items = video_tokens(next(next_video), vision, encode or _no_text,
                                         len(ids))
            ids.extend(tokens)
            inputs.extend(items)
            k += 1  # the template's <|vision_end|> is part of the video's tokens
        else:
            ids.append(token)
        k += 1
    return ids, inputs


def _no_text(text: str) -> list[int]:
    raise ValueError(f"placing a Qwen3-VL video needs a tokenizer for {text!r}")


def expanded_position(position: int, prompt_ids: Sequence[int],
                      images: Sequence[ProcessedImage], vision: VisionInfo | None,
                      videos: Sequence[ProcessedVideo] = (),
                      encode: Callable[[str], list[int]] | None = None) -> int:
    """Where token ``position`` of the unexpanded prompt lands once images and videos are
    expanded."""
    if (not images and not videos) or vision is None:
        return position
    extra = 0
    next_image, next_video = iter(images), iter(videos)
    for spot, token in enumerate(prompt_ids):
        if spot >= position:
            break
        if token == vision.image_token_id:
            extra += next(next_image).num_tokens - 1
        elif token == vision.video_token_id:
            tokens, _ = video_tokens(next(next_video), vision, encode or _no_text, 0)
            extra += len(tokens) - 3
    return position + extra
