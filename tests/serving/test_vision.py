"""Vision families' profiles, placeholder expansion and the cache-mark position with images."""

from __future__ import annotations

import numpy as np
import pytest

from dashserve.errors import InvalidRequest
from dashserve.multimodal.image import QWEN3_VL, QWEN25_VL, QWEN_VL_LATEST, ProcessedImage
from dashserve.serving import profiles
from dashserve.serving.vision import expanded_position, place_images
from tests.utils.fake_engine import FAKE_VISION

PAD = FAKE_VISION.image_token_id


@pytest.mark.parametrize("name,profile,pixels", [
    ("qwen3-vl-plus", profiles.QWEN3_VL, QWEN3_VL),
    ("qwen3-vl-8b-instruct", profiles.QWEN3_VL, QWEN3_VL),
    ("qwen-vl-max", profiles.QWEN_VL_MAX, QWEN_VL_LATEST),
    ("qwen-vl-max-latest", profiles.QWEN_VL_MAX, QWEN_VL_LATEST),
    ("qwen-vl-plus", profiles.QWEN_VL_PLUS, QWEN_VL_LATEST),
    ("qwen-vl-plus-latest", profiles.QWEN_VL_PLUS_LATEST, QWEN_VL_LATEST),
    ("qwen2.5-vl-7b-instruct", profiles.QWEN25_VL, QWEN25_VL),
    ("qvq-max", profiles.QVQ, QWEN25_VL),
])
def test_vision_families_match_before_text_families(name: str, profile: profiles.ModelProfile,
                                                    pixels: object) -> None:
    got = profiles.profile_for(name, "Qwen2_5_VLForConditionalGeneration")
    assert got is profile and got.pixels is pixels


def test_vision_family_defaults_from_seed_003() -> None:
    assert profiles.profile_for("qwen2.5-7b-instruct").pixels is None
    vl_max = profiles.QWEN_VL_MAX.sampling
    assert (vl_max.temperature, vl_max.top_p, vl_max.top_k, vl_max.repetition_penalty,
            vl_max.presence_penalty, vl_max.seed) == (0.01, 0.001, 1, 1.0, 1.5, 3407)
    assert profiles.QWEN_VL_PLUS.sampling.repetition_penalty == 1.2
    assert profiles.QWEN_VL_PLUS.sampling.seed is None
    assert profiles.QWEN25_VL.sampling.top_p == 0.001
    assert not profiles.QWEN_VL_MAX.tools and profiles.QWEN3_VL.tools
    assert profiles.QVQ.incremental_output and profiles.QWEN3_VL.incremental_output


def image(tokens: int) -> ProcessedImage:
    return ProcessedImage(np.zeros((tokens * 4, 1536), np.float32), (1, 2, tokens * 2),
                          (32, 32 * tokens), f"h{tokens}", tokens)


def test_place_images_expands_each_placeholder() -> None:
    ids = [1, 2, PAD, 3, 4, PAD, 5]
    out, inputs = place_images(ids, [image(3), image(2)], FAKE_VISION)
    assert out == [1, 2, PAD, PAD, PAD, 3, 4, PAD, PAD, 5]
    assert [(i.offset, i.length, i.content_hash) for i in inputs] == [(2, 3, "h3"), (7, 2, "h2")]
    assert inputs[0].pixel_values.shape == (12, 1536) and inputs[0].kind == "image"
    assert expanded_position(3, ids, [image(3), image(2)], FAKE_VISION) == 5
    assert expanded_position(6, ids, [image(3), image(2)], FAKE_VISION) == 9
    assert expanded_position(2, ids, [image(3), image(2)], FAKE_VISION) == 2


def test_placeholders_must_match_the_images() -> None:
    with pytest.raises(InvalidRequest, match="placeholders"):
        place_images([1, PAD, PAD, 2], [image(2)], FAKE_VISION)
    assert place_images([1, 2], [], None) == ([1, 2], [])
