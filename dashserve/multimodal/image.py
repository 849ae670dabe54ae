"""Images for the Qwen VL models: decode, the pixel budget of each family, resize, patchify.

The resize rule is transformers' ``smart_resize`` (the one DashScope's vision guide
publishes): both sides rounded to the family's pixels-per-token factor (28 on Qwen2.5-VL
and QVQ, 32 on Qwen3-VL), scaled down (floor) above ``max_pixels`` or up (ceil) below
``min_pixels``, aspect ratios over 200:1 refused. Pixels then follow transformers' PIL
Qwen2-VL image processor: BICUBIC resize, rescale by 1/255, CLIP mean/std, and the patch
layout of its ``patchify`` (each patch repeated over the temporal patch).
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dashserve.errors import InvalidRequest

MAX_ASPECT_RATIO = 200
# Decoded images above this many pixels are refused before their pixels are read.
MAX_DECODED_PIXELS = 100_000_000
FORMATS = frozenset({"JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF", "MPO"})


@dataclass(frozen=True, slots=True)
class PixelSpec:
    """One model family's image pixel budget (seed 003, ``min_pixels``/``max_pixels``).

    ``min_pixels`` is both the default and the smallest value a client may give;
    ``max_pixels`` the default cap, ``max_pixels_limit`` the largest value a client may give
    and the fixed cap under ``vl_high_resolution_images`` (16384 tokens).
    """

    min_pixels: int
    max_pixels: int
    max_pixels_limit: int


QWEN3_VL = PixelSpec(65536, 2621440, 16777216)
QWEN_VL_LATEST = PixelSpec(4096, 1310720, 16777216)  # qwen-vl-max/plus and their -latest
QWEN25_VL = PixelSpec(3136, 1003520, 12845056)  # Qwen2.5-VL, QVQ, older qwen-vl
QWEN_VL_OCR = PixelSpec(3136, 6422528, 23520000)  # qwen-vl-ocr: 8192 to 30000 tokens of 28x28
FAMILY_SPECS = {"qwen3-vl": QWEN3_VL, "qwen2.5-vl": QWEN25_VL}


def smart_resize(height: int, width: int, factor: int, min_pixels: int,
                 max_pixels: int) -> tuple[int, int]:
    """The (height, width) an image is resized to; sides are multiples of ``factor``."""
    if min(height, width) <= 0:
        raise InvalidRequest(f"the image has no pixels ({width}x{height})", param="image")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InvalidRequest(
            f"the image's aspect ratio must be at most {MAX_ASPECT_RATIO}:1; got "
            f"{width}x{height}", param="image")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def pixel_bounds(spec: PixelSpec, min_pixels: int | None, max_pixels: int | None, *,
                 high_resolution: bool, where: str) -> tuple[int, int]:
    """The (min_pixels, max_pixels) of one image: the client's values within the family's
    range (else 400 naming the key), the defaults otherwise. ``vl_high_resolution_images``
    fixes the cap at the family's largest and ignores ``max_pixels``."""
    lo = spec.min_pixels if min_pixels is None else min_pixels
    if isinstance(lo, bool) or not isinstance(lo, int) \
            or not spec.min_pixels <= lo <= spec.max_pixels_limit:
        raise InvalidRequest(f"Range of {where}.min_pixels should be [{spec.min_pixels}, "
                             f"{spec.max_pixels_limit}]", param=f"{where}.min_pixels")
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(
            max_pixels, int) or not lo <= max_pixels <= spec.max_pixels_limit):
        raise InvalidRequest(f"Range of {where}.max_pixels should be [{lo}, "
                             f"{spec.max_pixels_limit}]", param=f"{where}.max_pixels")
    if high_resolution:
        return lo, spec.max_pixels_limit
    hi = spec.max_pixels if max_pixels is None else max_pixels
    return lo, max(lo, hi)


def decode_image(data: bytes, where: str = "image", *, rotate: bool = False) -> Image.Image:
    """RGB pixels of an encoded image (transparency pasted on white); turned upright by its
    EXIF orientation only when ``rotate`` (``enable_rotate``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise InvalidRequest(f"{where}: unsupported image format {image.format}; use "
                                     "JPEG, PNG, BMP, TIFF, WEBP or GIF", param=where)
            width, height = image.size
            if width * height > MAX_DECODED_PIXELS:
                raise InvalidRequest(f"{where}: the image has {width}x{height} pixels, more "
                                     f"than the {MAX_DECODED_PIXELS} allowed", param=where)
            image.load()
    except InvalidRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidRequest(f"{where}: the image is too large to decode", param=where) from exc
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError) as exc:
        raise InvalidRequest(f"{where}: the data is not a decodable image", param=where) \
            from exc
    if min(image.size) <= 0:
        raise InvalidRequest(f"{where}: the image has no pixels", param=where)
    upright: Image.Image = ImageOps.exif_transpose(image) if rotate else image
    if upright.mode in ("RGBA", "LA") or (upright.mode == "P" and "transparency" in upright.info):
        rgba = upright.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.split()[3])
        return white
    return upright.convert("RGB")


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    """One image, resized and patchified for the vision encoder."""

    pixel_values: np.ndarray  # [t * h * w patches, 3 * temporal * patch * patch], float32
    grid_thw: tuple[int, int, int]
    resized_hw: tuple[int, int]  # (height, width) after smart_resize
    content_hash: str
    num_tokens: int  # placeholder tokens in the prompt


def image_tokens(height: int, width: int, *, patch_size: int, merge_size: int,
                 min_pixels: int, max_pixels: int) -> tuple[int, int, int]:
    """(tokens, resized height, resized width) of an image of this size."""
    h, w = smart_resize(height, width, patch_size * merge_size, min_pixels, max_pixels)
    return (h // patch_size) * (w // patch_size) // merge_size**2, h, w


def patchify(image: np.ndarray, patch_size: int, merge_size: int,
             temporal_patch_size: int) -> np.ndarray:
    """[C, H, W] → [grid_h * grid_w, C * temporal * patch * patch] in the processors' order."""
    channels, height, width = image.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = image.reshape(channels, grid_h // merge_size, merge_size, patch_size,
                            grid_w // merge_size, merge_size, patch_size)
    patches = patches.transpose(1, 4, 2, 5, 0, 3, 6)
    patches = np.broadcast_to(patches[:, :, :, :, :, None, :, :],
                              (*patches.shape[:5], temporal_patch_size, *patches.shape[5:]))
    return np.ascontiguousarray(patches.reshape(
        grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size))


def preprocess_image(image: Image.Image, *, patch_size: int, merge_size: int,
                     temporal_patch_size: int, mean: tuple[float, float, float],
                     std: tuple[float, float, float], min_pixels: int,
                     max_pixels: int) -> ProcessedImage:
    """Resize, normalise and patchify an RGB image (CPU-bound: run it off the event loop)."""
    width, height = image.size
    h, w = smart_resize(height, width, patch_size * merge_size, min_pixels, max_pixels)
    resized = image.resize((w, h), Image.Resampling.BICUBIC)
    pixels = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) * np.float32(1 / 255)
    pixels = (pixels - np.asarray(mean, np.float32)[:, None, None]) \
        / np.asarray(std, np.float32)[:, None, None]
    patches = patchify(pixels.astype(np.float32), patch_size, merge_size, temporal_patch_size)
    digest = hashlib.sha256()
    digest.update(f"{width}x{height}:{w}x{h}:{patch_size}:{merge_size}:".encode())
    digest.update(image.tobytes())
    grid = (1, h // patch_size, w // patch_size)
    return ProcessedImage(patches, grid, (h, w), digest.hexdigest(),
                          grid[1] * grid[2] // merge_size**2)
