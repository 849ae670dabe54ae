"""Videos on the engine: parity with transformers given ``pixel_values_videos`` and
``video_grid_thw`` (M-RoPE positions, logits, greedy tokens). Qwen2.5-VL places a video as one
item whose temporal positions step by seconds per temporal patch; Qwen3-VL as one item per
temporal patch, a timestamp's text before each (as its processor writes the prompt)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.request import EngineRequest
from dashserve.multimodal.video import patchify_video, seconds_per_grid_t
from tests.engine.test_vision_engine import (
    GREEDY,
    PATCH,
    hf_class,
    make_engine,
    prefill_logits,
    run,
)

ATOL = 1e-4
START, END, VIDEO_PAD = 151652, 151653, 151656
HEAD = [151644, 872, 198, 9707, 11]
TAIL = [3838, 374, 419, 30, 151645, 198, 151644, 77091, 198]
STAMP = [27, 15, 13, 20, 6486, 29]  # text before each Qwen3-VL frame group ("<0.5 seconds>")


def frames(seed: int, t: int, h: int, w: int) -> np.ndarray:
    """``t`` random normalised frames [T, 3, H, W]."""
    x = np.random.default_rng(seed).integers(0, 256, (t, 3, h, w)).astype(np.float32)
    return (x / 255.0 - 0.5) / 0.5


def video_prompt(preset: str, seed: int = 0, fps: float = 1.0, t: int = 4
                 ) -> tuple[list[int], list[MultiModalInput], torch.Tensor, tuple[int, int, int]]:
    """(ids, engine items, pixel_values_videos, video_grid_thw) of one video in a prompt."""
    p = PATCH[preset]
    clip = frames(seed, t, 6 * p, 8 * p)
    pixels = torch.from_numpy(patchify_video(clip, p, 2))
    grid = (t // 2, 6, 8)
    per_group = grid[1] * grid[2] // 4
    digest = hashlib.sha256(clip.tobytes()).hexdigest()
    ids = list(HEAD)
    items: list[MultiModalInput] = []
    if preset.startswith("qwen3"):
        rows = grid[1] * grid[2]
        for k in range(grid[0]):
            ids.extend([*STAMP, START])
            items.append(MultiModalInput("video", pixels[k * rows:(k + 1) * rows],
                                         (1, grid[1], grid[2]), f"{digest}:{k}", len(ids),
                                         per_group))
            ids.extend([VIDEO_PAD] * per_group + [END])
    else:
        ids.append(START)
        items.append(MultiModalInput("video", pixels, grid, digest, len(ids),
                                     per_group * grid[0], seconds_per_grid_t(fps)))
        ids.extend([VIDEO_PAD] * per_group * grid[0] + [END])
    ids.extend(TAIL)
    return ids, items, pixels, grid


def hf_inputs(preset: str, ids: list[int], pixels: torch.Tensor, grid: tuple[int, int, int],
              fps: float = 1.0) -> dict[str, torch.Tensor]:
    input_ids = torch.tensor([ids])
    out = {"input_ids": input_ids, "pixel_values_videos": pixels,
           "video_grid_thw": torch.tensor([grid]),
           "mm_token_type_ids": (input_ids == VIDEO_PAD).int() * 2,
           "attention_mask": torch.ones_like(input_ids)}
    if not preset.startswith("qwen3"):
        out["second_per_grid_ts"] = torch.tensor([seconds_per_grid_t(fps)])
    return out


@pytest.fixture(scope="module", params=list(PATCH))
def vl(request, model_dir_factory):
    preset = request.param
    model_dir = model_dir_factory(preset)
    hf = hf_class(preset).from_pretrained(model_dir, dtype=torch.float32).eval()
    return preset, model_dir, hf


@pytest.mark.parametrize(("fps", "t"), [(2.0, 4), (0.5, 6)])
def test_video_positions_match_get_rope_index(vl, fps: float, t: int) -> None:
    preset, model_dir, hf = vl
    ids, items, pixels, grid = video_prompt(preset, fps=fps, t=t)
    inputs = hf_inputs(preset, ids, pixels, grid, fps)
    kwargs = {k: inputs[k] for k in ("mm_token_type_ids", "video_grid_thw", "attention_mask")}
    if "second_per_grid_ts" in inputs:
        kwargs["second_per_grid_ts"] = inputs["second_per_grid_ts"]
    ref, ref_delta = hf.model.get_rope_index(inputs["input_ids"], **kwargs)
    ref = ref[:, 0]
    engine = make_engine(model_dir)
    engine.add_request(EngineRequest("r", ids, GREEDY, tuple(items)))
    seq = engine.scheduler.waiting[0]
    positions = seq.mrope_positions
    end = items[-1].offset + items[-1].length
    assert torch.equal(positions[:, :end], ref[:, :end])
    if preset.startswith("qwen3"):  # one frame group per item: time is the text between
        assert torch.equal(positions, ref) and seq.mrope_delta == int(ref_delta)
        return
    first = items[0]
    step = int(positions[0, first.offset + 12]) - int(positions[0, first.offset])
    assert step == int(seconds_per_grid_t(fps) * 2)  # tokens_per_second 2
    # text after the video resumes one past its largest position (as the checkpoints'
    # own code and vLLM do); transformers 5 resumes at start + max(h, w) / merge, which
    # agrees while the video's time span is no longer than its width
    last_video = int(positions[:, first.offset:end].max())
    assert int(positions[0, end]) == last_video + 1
    assert seq.mrope_delta == int(positions.max()) + 1 - len(ids)
    if (grid[0] - 1) * step < max(grid[1], grid[2]) // 2:
        assert torch.equal(positions, ref) and seq.mrope_delta == int(ref_delta)


@pytest.mark.parametrize("budget", [512, 16])  # 16: chunked prefill splits the video
def test_video_logits_and_greedy_tokens_match_transformers(vl, budget: int) -> None:
    preset, model_dir, hf = vl
    ids, items, pixels, grid = video_prompt(preset, fps=2.0)
    inputs = hf_inputs(preset, ids, pixels, grid, fps=2.0)
    with torch.inference_mode():
        ref_logits = hf(**inputs).logits[0, -1]
        ref = hf.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                          pad_token_id=151643)[0, len(ids):].tolist()
    engine = make_engine(model_dir, max_num_batched_tokens=budget)
    tokens, _ = run(engine, "a", ids, items)
    assert tokens == ref
    logits = prefill_logits(engine, "b", ids, items)
    assert torch.allclose(logits, ref_logits, atol=ATOL), (logits - ref_logits).abs().max()
    ids2, _, other, _ = video_prompt(preset, seed=9, fps=2.0)
    with torch.inference_mode():
        other_logits = hf(**hf_inputs(preset, ids2, other, grid, fps=2.0)).logits[0, -1]
    assert (other_logits - ref_logits).abs().max() > 100 * ATOL  # the frames matter
