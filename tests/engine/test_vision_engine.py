"""Qwen2.5-VL and Qwen3-VL on the engine: parity with transformers on prompts with two images
(M-RoPE positions, logits, greedy tokens, chunked prefill splitting an image), the prefix
cache keyed by image content, and the encoder cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.engine.engine import EngineConfig, LLMEngine
from dashserve.engine.scheduler import ScheduledChunk
from dashserve.errors import InvalidRequest
from tests.utils.vision import build_prompt, random_image

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
PATCH = {"qwen2.5-vl-tiny": 14, "qwen3-vl-tiny": 16}
# fp32 end to end; the encoders and decoders agree with transformers to ~1e-6, the bound
# leaves room for summation order in attention over a few hundred tokens
ATOL = 1e-4


def hf_class(preset: str):
    import transformers

    if preset.startswith("qwen3"):
        return transformers.Qwen3VLForConditionalGeneration
    return transformers.Qwen2_5_VLForConditionalGeneration


def make_engine(model_dir: Path, **kw) -> LLMEngine:
    opts = dict(dtype="fp32", max_model_len=1024, max_num_seqs=8, max_num_batched_tokens=512)
    opts.update(kw)
    return LLMEngine(EngineConfig(model=str(model_dir), **opts))


def two_image_prompt(preset: str, seed: int = 0) -> tuple[list[int], list[MultiModalInput]]:
    p = PATCH[preset]
    return build_prompt([
        [151644, 872, 198, 9707, 11],
        random_image(seed, 8 * p, 12 * p),  # 24 tokens; Qwen2.5-VL: two attention windows
        [3838, 374, 419, 30],
        random_image(seed + 1, 10 * p, 4 * p),  # 10 tokens
        [27, 151645, 198, 151644, 77091, 198],
    ], p)


def hf_inputs(ids: list[int], items: list[MultiModalInput]) -> dict[str, torch.Tensor]:
    input_ids = torch.tensor([ids])
    return {
        "input_ids": input_ids,
        "pixel_values": torch.cat([it.pixel_values for it in items]),
        "image_grid_thw": torch.tensor([it.grid_thw for it in items]),
        "mm_token_type_ids": (input_ids == 151655).int(),
        "attention_mask": torch.ones_like(input_ids),
    }


def run(engine: LLMEngine, rid: str, ids: list[int], items, params=GREEDY) -> tuple[list[int], int]:
    engine.add_request(EngineRequest(rid, ids, params, tuple(items)))
    tokens: list[int] = []
    cached = 0
    while engine.has_unfinished():
        for ev in engine.step():
            tokens.extend(ev.token_ids)
            cached = ev.num_cached_tokens
    return tokens, cached


@pytest.fixture(scope="module", params=list(PATCH))
def vl(request, model_dir_factory):
    preset = request.param
    model_dir = model_dir_factory(preset)
    hf = hf_class(preset).from_pretrained(model_dir, dtype=torch.float32).eval()
    return preset, model_dir, hf


def test_mrope_positions_match_get_rope_index(vl) -> None:
    preset, model_dir, hf = vl
    engine = make_engine(model_dir)
    ids, items = two_image_prompt(preset)
    inputs = hf_inputs(ids, items)
    ref, ref_delta = hf.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"], attention_mask=inputs["attention_mask"])
    engine.add_request(EngineRequest("r", ids, GREEDY, tuple(items)))
    seq = engine.scheduler.waiting[0]
    assert torch.equal(seq.mrope_positions, ref[:, 0])
    assert seq.mrope_delta == int(ref_delta) < 0
    # text after the first image resumes at start + max(h, w) / merge, not start + tokens
    first = items[0]
    assert int(seq.mrope_positions[0, first.offset + first.length + 1]) == first.offset + 1 + 6



def prefill_logits(engine: LLMEngine, request_id: str, ids: list[int],
                   items: list[MultiModalInput]) -> torch.Tensor:
    """The last position's logits after one prefill of the whole prompt, nothing sampled."""
    engine.add_request(EngineRequest(request_id, ids, GREEDY, tuple(items)))
    seq = engine.scheduler.waiting.popleft()
    engine.block_manager.allocate(seq)
    seq.num_computed_tokens = 0
    logits: torch.Tensor = engine.runner.execute([], [ScheduledChunk(seq, len(ids))])[0]
    return logits

@pytest.mark.parametrize("budget", [512, 16])  # 16: chunked prefill splits both images
def test_logits_and_greedy_tokens_match_transformers(vl, budget: int) -> None:
    preset, model_dir, hf = vl
    ids, items = two_image_prompt(preset)
    inputs = hf_inputs(ids, items)
    with torch.inference_mode():
        ref_logits = hf(**inputs).logits[0, -1]
        ref = hf.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                          pad_token_id=151643)[0, len(ids):].tolist()
    engine = make_engine(model_dir, max_num_batched_tokens=budget)
    tokens, _ = run(engine, "a", ids, items)
    assert tokens == ref
    logits = prefill_logits(engine, "b", ids, items)
    assert torch.allclose(logits, ref_logits, atol=ATOL), (logits - ref_logits).abs().max()
    _, other = two_image_prompt(preset, seed=10)
    with torch.inference_mode():
        other_logits = hf(**hf_inputs(ids, other)).logits[0, -1]
    assert (other_logits - ref_logits).abs().max() > 100 * ATOL  # the pixels matter


def test_text_only_prompt_runs_as_on_a_text_model(vl) -> None:
    preset, model_dir, hf = vl
    ids = [151644, 872, 198, 9707, 11, 3838, 374, 419, 30, 151645, 198, 151644, 77091, 198]
    with torch.inference_mode():
        ref = hf.generate(torch.tensor([ids]), max_new_tokens=8, min_new_tokens=8,
                          do_sample=False, pad_token_id=151643)[0, len(ids):].tolist()
    engine = make_engine(model_dir)
    engine.add_request(EngineRequest("t", ids, GREEDY))
    seq = engine.scheduler.waiting[0]
    assert seq.mrope_positions is None and seq.mrope_delta == 0
    _, positions, *_ = engine.runner.prepare([], [ScheduledChunk(seq, len(ids))])
    assert positions.dim() == 1  # the text path: 1-D rotary positions
    tokens: list[int] = []
    while engine.has_unfinished():
        for ev in engine.step():
            tokens.extend(ev.token_ids)
    assert tokens == ref


def test_prefix_cache_keys_blocks_by_image_content(vl) -> None:
    preset, model_dir, _ = vl
    engine = make_engine(model_dir, block_size=4)
    ids, items = two_image_prompt(preset, seed=0)
    _, other = two_image_prompt(preset, seed=10)  # same tokens, different pixels
    first_image = items[0].offset
    tokens_a, cached_a = run(engine, "a", ids, items)
    assert cached_a == 0
    tokens_b, cached_b = run(engine, "b", ids, other)
    assert cached_b == first_image // 4 * 4  # stops before the block holding the first image
    tokens_c, cached_c = run(engine, "c", ids, items)
    assert cached_c == (len(ids) - 1) // 4 * 4  # same image and text: the whole prefix
    assert tokens_c == tokens_a


def test_encoder_cache_encodes_a_repeated_image_once(vl) -> None:
    preset, model_dir, _ = vl
    engine = make_engine(model_dir, enable_prefix_caching=False, max_num_batched_tokens=16)
    ids, items = two_image_prompt(preset)
    vision = engine.runner.vision
    first, _ = run(engine, "a", ids, items)
    assert vision.num_encoded == 2  # each image once, though chunks split both
    again, _ = run(engine, "b", ids, items)
    assert vision.num_encoded == 2 and again == first
    small = make_engine(model_dir, enable_prefix_caching=False, encoder_cache_tokens=8)
    run(small, "a", ids, items)
    run(small, "b", ids, items)
    assert small.runner.vision.num_encoded == 4  # neither image fits the cache


def test_model_info_describes_the_vision_encoder(vl) -> None:
    from dashserve.engine.async_engine import vision_info

    preset, model_dir, _ = vl
    engine = make_engine(model_dir)
    info = vision_info(engine.model_config.vision)
    assert info is not None and info.family == preset.removesuffix("-tiny")
    assert info.patch_size == PATCH[preset] and info.spatial_merge_size == 2
    assert (info.image_token_id, info.video_token_id) == (151655, 151656)
    assert (info.vision_start_token_id, info.vision_end_token_id) == (151652, 151653)
    mean = (0.5,) * 3 if preset.startswith("qwen3") else (0.48145466, 0.4578275, 0.40821073)
    assert info.image_mean == mean
    assert vision_info(None) is None


def test_images_are_checked_against_the_prompt(vl, qwen3_tiny_dir: Path) -> None:
    preset, model_dir, _ = vl
    ids, items = two_image_prompt(preset)
    text_engine = make_engine(qwen3_tiny_dir)
    with pytest.raises(InvalidRequest, match="does not accept images"):
        text_engine.add_request(EngineRequest("x", ids, GREEDY, tuple(items)))
    engine = make_engine(model_dir)
    item = items[0]
    pixels, grid, offset, length = item.pixel_values, item.grid_thw, item.offset, item.length
    bad = [
        MultiModalInput("image", pixels, grid, "h", offset + 1, length),  # misplaced
        MultiModalInput("image", pixels, grid, "h", offset, length - 1),  # too few tokens
        MultiModalInput("image", pixels[:-1], grid, "h", offset, length),  # pixels off the grid
        MultiModalInput("image", pixels, (2, *grid[1:]), "h", offset, length),  # two frames
    ]
    for wrong in bad:
        with pytest.raises(InvalidRequest):
            engine.add_request(EngineRequest("x", ids, GREEDY, tuple([wrong, items[1]])))
    with pytest.raises(InvalidRequest, match="placeholder tokens without an image"):
        engine.add_request(EngineRequest("x", ids, GREEDY, tuple([items[1]])))
    assert not engine.has_unfinished()


def test_image_requests_batched_preempted_and_forked_sample_as_alone(vl) -> None:
    """Seeded sampling gives the same tokens alone as in a batch of image requests that a
    tiny KV cache forces to preempt (recompute with images) and with n=2 forks."""
    preset, model_dir, _ = vl
    prompts = {f"r{i}": two_image_prompt(preset, seed=2 * i) for i in range(6)}
    params = {rid: SamplingParams(temperature=1.0, seed=i, max_tokens=30, ignore_eos=True,
                                  n=2 if i == 0 else 1) for i, rid in enumerate(prompts)}
    engine = make_engine(model_dir, kv_cache_gb=24 * 16 * 512 / 2**30, max_model_len=128,
                         max_num_batched_tokens=64)
    out: dict[str, dict[int, list[int]]] = {rid: {} for rid in prompts}
    for rid, (ids, items) in prompts.items():
        engine.add_request(EngineRequest(rid, ids, params[rid], tuple(items)))
    while engine.has_unfinished():
        for ev in engine.step():
            out[ev.request_id].setdefault(ev.index, []).extend(ev.token_ids)
    assert engine.stats().num_preemptions > 0
    roomy = make_engine(model_dir)
    for rid, (ids, items) in prompts.items():
        roomy.add_request(EngineRequest(rid, ids, params[rid], tuple(items)))
        alone: dict[int, list[int]] = {}
        while roomy.has_unfinished():
            for ev in roomy.step():
                alone.setdefault(ev.index, []).extend(ev.token_ids)
        assert out[rid] == alone, rid
    assert len(set(map(tuple, (v[0] for v in out.values())))) == len(prompts)  # not degenerate


async def test_async_engine_takes_images(vl) -> None:
    from dashserve.engine.async_engine import AsyncEngine

    preset, model_dir, _ = vl
    ids, items = two_image_prompt(preset)
    engine = AsyncEngine(make_engine(model_dir))
    try:
        assert engine.model_info.vision is not None
        events = [e async for e in engine.submit(EngineRequest("a", ids, GREEDY, tuple(items)))]
        assert events[-1].finished and sum(len(e.token_ids) for e in events) == 8
        with pytest.raises(InvalidRequest):
            [e async for e in engine.submit(EngineRequest("b", ids, GREEDY))]  # placeholders without images
    finally:
        await engine.shutdown()


def test_offline_llm_generates_with_images(vl) -> None:
    from dashserve.llm import LLM

    preset, model_dir, _ = vl
    ids, items = two_image_prompt(preset)
    _, other = two_image_prompt(preset, seed=10)
    llm = LLM(model=str(model_dir), dtype="fp32", max_model_len=512)
    params = SamplingParams(temperature=1.0, seed=3, max_tokens=12, ignore_eos=True)
    outs = llm.generate([ids, ids, ids], params, mm_inputs=[items, other, items])
    tokens = [o.outputs[0].token_ids for o in outs]
    assert tokens[0] == tokens[2] != tokens[1]  # the image, not only the text, decides
    with pytest.raises(ValueError):
        llm.generate([ids], params, mm_inputs=[items, items])
