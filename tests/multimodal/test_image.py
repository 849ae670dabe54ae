"""Image token counts and pixels against transformers' Qwen2-VL PIL image processor."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from dashserve.errors import InvalidRequest
from dashserve.multimodal.image import (
    QWEN3_VL,
    QWEN25_VL,
    decode_image,
    image_tokens,
    pixel_bounds,
    preprocess_image,
    smart_resize,
)

pil_qwen2_vl = pytest.importorskip(
    "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def png(width: int, height: int, mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    image = Image.fromarray(data[..., 0] if channels == 1 else data, mode)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_token_counts_match_transformers_on_random_sizes() -> None:
    rng = random.Random(12)
    for _ in range(5000):
        h = rng.choice([rng.randint(1, 64), rng.randint(1, 2000), rng.randint(1, 9000)])
        w = rng.choice([rng.randint(1, 64), rng.randint(1, 2000), rng.randint(1, 9000)])
        if max(h, w) / min(h, w) > 200:
            with pytest.raises(InvalidRequest):
                smart_resize(h, w, 28, 3136, 1003520)
            continue
        patch, spec = rng.choice([(14, QWEN25_VL), (16, QWEN3_VL)])
        factor = patch * 2
        lo = rng.choice([spec.min_pixels, rng.randint(spec.min_pixels, 10**6)])
        hi = rng.choice([spec.max_pixels, spec.max_pixels_limit, rng.randint(lo, 4 * 10**6)])
        expected = pil_qwen2_vl.smart_resize(h, w, factor=factor, min_pixels=lo,
                                             max_pixels=hi)
        assert smart_resize(h, w, factor, lo, hi) == expected, (h, w, factor, lo, hi)
        tokens, rh, rw = image_tokens(h, w, patch_size=patch, merge_size=2,
                                      min_pixels=lo, max_pixels=hi)
        assert (rh, rw) == expected
        assert tokens == (rh // patch) * (rw // patch) // 4


def test_seed_formula_examples() -> None:
    # Qwen3-VL: one token per 32x32 pixels; Qwen2.5-VL: per 28x28.
    assert image_tokens(448, 448, patch_size=16, merge_size=2, min_pixels=65536,
                        max_pixels=2621440)[0] == 14 * 14
    assert image_tokens(300, 500, patch_size=14, merge_size=2, min_pixels=3136,
                        max_pixels=1003520)[0] == 198
    assert image_tokens(300, 500, patch_size=16, merge_size=2, min_pixels=65536,
                        max_pixels=2621440)[0] == 144


@pytest.mark.parametrize("patch,mode,size", [(14, "RGB", (300, 500)), (16, "RGB", (97, 61)),
                                             (16, "L", (640, 200))])
def test_pixels_match_transformers_processor(patch: int, mode: str,
                                             size: tuple[int, int]) -> None:
    width, height = size
    image = decode_image(png(width, height, mode))
    ours = preprocess_image(image, patch_size=patch, merge_size=2, temporal_patch_size=2,
                            mean=CLIP_MEAN, std=CLIP_STD, min_pixels=3136,
                            max_pixels=1003520)
    processor = pil_qwen2_vl.Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": 3136, "longest_edge": 1003520})
    ref = processor(images=[image], return_tensors="np")
    assert ours.grid_thw == tuple(int(x) for x in ref["image_grid_thw"][0])
    assert ours.pixel_values.shape == ref["pixel_values"].shape
    np.testing.assert_allclose(ours.pixel_values, ref["pixel_values"], atol=1e-5)
    assert ours.num_tokens * 4 == ours.pixel_values.shape[0]


def test_transparency_is_pasted_on_white_and_hash_follows_pixels() -> None:
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    out = io.BytesIO()
    clear.save(out, "PNG")
    rgb = decode_image(out.getvalue())
    assert rgb.mode == "RGB" and rgb.getpixel((5, 5)) == (255, 255, 255)
    kwargs = dict(patch_size=16, merge_size=2, temporal_patch_size=2, mean=CLIP_MEAN,
                  std=CLIP_STD, min_pixels=65536, max_pixels=2621440)
    a = preprocess_image(decode_image(png(64, 64, seed=1)), **kwargs)
    b = preprocess_image(decode_image(png(64, 64, seed=1)), **kwargs)
    c = preprocess_image(decode_image(png(64, 64, seed=2)), **kwargs)
    assert a.content_hash == b.content_hash != c.content_hash


@pytest.mark.parametrize("data", [b"", b"not an image", png(4, 4)[:30]])
def test_undecodable_data_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidRequest, match="not a decodable image"):
        decode_image(data)


def test_unsupported_format_and_bombs_are_refused() -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PPM")
    with pytest.raises(InvalidRequest, match="unsupported image format"):
        decode_image(out.getvalue())
    big = io.BytesIO()
    Image.new("1", (12000, 12000)).save(big, "PNG")  # 144 M pixels in a few kB
    with pytest.raises(InvalidRequest, match="too large to decode|more than"):
        decode_image(big.getvalue())


def test_absurd_aspect_ratio_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="aspect ratio"):
        smart_resize(2, 401, 28, 3136, 1003520)


def test_pixel_bounds_follow_the_family_ranges() -> None:
    assert pixel_bounds(QWEN3_VL, None, None, high_resolution=False, where="p") \
        == (65536, 2621440)
    assert pixel_bounds(QWEN25_VL, 5000, 8000, high_resolution=False, where="p") \
        == (5000, 8000)
    # vl_high_resolution_images: max_pixels ignored, the cap is 16384 tokens
    assert pixel_bounds(QWEN3_VL, None, 70000, high_resolution=True, where="p") \
        == (65536, 16384 * 32 * 32)
    assert pixel_bounds(QWEN25_VL, None, None, high_resolution=True, where="p") \
        == (3136, 16384 * 28 * 28)
    with pytest.raises(InvalidRequest) as err:
        pixel_bounds(QWEN3_VL, 4096, None, high_resolution=False, where="input.messages[0]")
    assert err.value.param == "input.messages[0].min_pixels"
    with pytest.raises(InvalidRequest) as err:
        pixel_bounds(QWEN25_VL, None, 12845057, high_resolution=False, where="m")
    assert err.value.param == "m.max_pixels"
