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
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from dashserve.engine.client_protocol import VisionInfo
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
from dashserve.multimodal.inputs import MultiModalInput
from dashserve.serving.profiles import ModelProfile
from dashserve.serving.request import GenerationRequest, ImagePart

MAX_IMAGES_PER_REQUEST = 32
# <|vision_start|> and <|vision_end|> around each image, billed as image tokens (as
# DashScope's image token formula counts them).
IMAGE_MARKER_TOKENS = 2


@dataclass(frozen=True, slots=True)
class PreparedImages:
    """A request's images, in prompt order; empty for text requests."""

    images: tuple[ProcessedImage, ...] = ()

    @property
    def image_tokens(self) -> int:
        """Image tokens as billed: the placeholders plus the two markers of each image."""
        return sum(i.num_tokens + IMAGE_MARKER_TOKENS for i in self.images)


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
        if not bounds:
            return PreparedImages()
        assert vision is not None
        parts = request.images
        datas = await asyncio.gather(*(
            load_media(p.source, p.where, self.config, workspace=workspace,
                       resolve_oss=request.resolve_oss) for p in parts))
        loop = asyncio.get_running_loop()
        processed = await asyncio.gather(*(
            loop.run_in_executor(self.executor, _process, data, part, vision, bound)
            for data, part, bound in zip(datas, parts, bounds)))
        return PreparedImages(tuple(processed))


def place_images(prompt_ids: Sequence[int], images: Sequence[ProcessedImage],
                 vision: VisionInfo | None) -> tuple[list[int], list[MultiModalInput]]:
    """Prompt ids with each image's placeholder expanded, and the engine's inputs."""
    if not images or vision is None:
        return list(prompt_ids), []
    pad = vision.image_token_id
    spots = [k for k, t in enumerate(prompt_ids) if t == pad]
    if len(spots) != len(images):
        raise InvalidRequest("the prompt's image placeholders do not match the images sent "
                             f"({len(spots)} for {len(images)})", param="messages")
    ids: list[int] = []
    inputs: list[MultiModalInput] = []
    start = 0
    for spot, image in zip(spots, images):
        ids.extend(prompt_ids[start:spot])
        inputs.append(MultiModalInput(
            kind="image", pixel_values=torch.from_numpy(image.pixel_values),
            grid_thw=image.grid_thw, content_hash=image.content_hash, offset=len(ids),
            length=image.num_tokens))
        ids.extend([pad] * image.num_tokens)
        start = spot + 1
    ids.extend(prompt_ids[start:])
    return ids, inputs


def expanded_position(position: int, prompt_ids: Sequence[int],
                      images: Sequence[ProcessedImage], vision: VisionInfo | None) -> int:
    """Where token ``position`` of the unexpanded prompt lands once images are expanded."""
    if not images or vision is None:
        return position
    extra = 0
    spots = (k for k, t in enumerate(prompt_ids) if t == vision.image_token_id)
    for spot, image in zip(spots, images):
        if spot < position:
            extra += image.num_tokens - 1
    return position + extra
