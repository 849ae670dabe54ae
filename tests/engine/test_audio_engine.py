"""Qwen3-ASR on the engine: log-mel features and logits against transformers' own
Qwen3-ASR classes, greedy tokens with and without chunked prefill, the prefix cache keyed by
audio content, the encoder cache, and audio checked against the prompt and the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.engine.engine import EngineConfig, LLMEngine
from dashserve.engine.scheduler import ScheduledChunk
from dashserve.errors import InvalidRequest
from dashserve.multimodal.audio import log_mel
from tests.utils.audio import asr_prompt, tone

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
# fp32 end to end: features are bit-identical, logits agree to ~3e-7 and encoder rows to
# ~1e-6. Random weights make the clip move the last logits by only ~4e-5, hence the tight
# bound, and the encoder rows are compared on their own too.
ATOL = 5e-6


def make_engine(model_dir: Path, **kw) -> LLMEngine:
    opts = dict(dtype="fp32", max_model_len=1024, max_num_seqs=8, max_num_batched_tokens=512)
    opts.update(kw)
    return LLMEngine(EngineConfig(model=str(model_dir), **opts))


def run(engine: LLMEngine, rid: str, ids: list[int], items) -> tuple[list[int], int]:
    engine.add_request(EngineRequest(rid, ids, GREEDY, items))
    tokens: list[int] = []
    cached = 0
    while engine.has_unfinished():
        for ev in engine.step():
            tokens.extend(ev.token_ids)
            cached = ev.num_cached_tokens
    return tokens, cached


@pytest.fixture(scope="module")
def asr(model_dir_factory):
    import transformers

    model_dir = model_dir_factory("qwen3-asr-tiny")
    hf = transformers.Qwen3ASRForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32).eval()
    return model_dir, hf


def hf_inputs(ids: list[int], samples: np.ndarray) -> dict[str, torch.Tensor]:
    import transformers

    fe = transformers.Qwen3ASRFeatureExtractor()
    feats = fe(samples, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    return {"input_ids": torch.tensor([ids]), "input_features": feats["input_features"],
            "input_features_mask": feats["attention_mask"]}


@pytest.mark.parametrize("seconds", [0.2, 1.0, 3.37])
def test_log_mel_matches_the_reference_extractor(seconds: float) -> None:
    import transformers

    samples = tone(seconds)
    ref = transformers.Qwen3ASRFeatureExtractor()(
        samples, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    feats, frames = log_mel(samples)
    assert frames == int(ref["attention_mask"].sum())
    assert feats.shape == (128, -(-frames // 100) * 100)
    assert torch.allclose(feats, ref["input_features"][0, :, :feats.shape[1]], atol=1e-5)


@pytest.mark.parametrize("budget", [512, 16])  # 16: chunked prefill splits the clip
def test_logits_and_greedy_tokens_match_transformers(asr, budget: int) -> None:
    model_dir, hf = asr
    samples = tone(3.37)  # 4 chunks, 44 tokens, two attention windows of the tiny encoder
    ids, item = asr_prompt(samples)
    assert item.length == 44
    inputs = hf_inputs(ids, samples)
    with torch.inference_mode():
        ref_logits = hf(**inputs).logits[0, -1]
        ref = hf.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                          pad_token_id=151643)[0, len(ids):].tolist()
    engine = make_engine(model_dir, max_num_batched_tokens=budget)
    tokens, _ = run(engine, "a", ids, [item])
    assert tokens == ref
    engine.add_request(EngineRequest("b", ids, GREEDY, [item]))
    seq = engine.scheduler.waiting.popleft()
    engine.block_manager.allocate(seq)
    seq.num_computed_tokens = 0  # recompute the whole prompt, cached prefix or not
    logits = engine.runner.execute([], [ScheduledChunk(seq, len(ids))])[0]
    assert torch.allclose(logits, ref_logits, atol=ATOL), (logits - ref_logits).abs().max()
    other_ids, _ = asr_prompt(tone(3.37, seed=5, freq=300.0))
    with torch.inference_mode():
        other = hf(**hf_inputs(other_ids, tone(3.37, seed=5, freq=300.0))).logits[0, -1]
    assert (other - ref_logits).abs().max() > 4 * ATOL  # the audio matters


def test_encoder_rows_match_transformers_for_clips_packed_together(asr) -> None:
    model_dir, hf = asr
    engine = make_engine(model_dir)
    clips = [tone(0.3, seed=3), tone(3.37), tone(1.0, seed=4, freq=800.0)]
    items = [asr_prompt(c)[1] for c in clips]
    with torch.inference_mode():
        rows = engine.runner.model.encode_audio([it.pixel_values for it in items],
                                                [it.audio_frames for it in items])
        for clip, item, got in zip(clips, items, rows, strict=True):
            feats = hf_inputs([], clip)
            ref = hf.model.get_audio_features(
                feats["input_features"], feats["input_features_mask"]).pooler_output
            assert got.shape == (item.length, 64) == ref.shape
            assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    assert (rows[1][:4] - rows[2][:4]).abs().max() > 0.01  # different clips, different rows


def test_prefix_cache_keys_blocks_by_audio_content(asr) -> None:
    model_dir, _ = asr
    engine = make_engine(model_dir, block_size=4)
    ids, item = asr_prompt(tone(2.0, seed=1))
    other_ids, other = asr_prompt(tone(2.0, seed=2))
    assert other_ids == ids and other.content_hash != item.content_hash
    tokens_a, cached_a = run(engine, "a", ids, [item])
    assert cached_a == 0
    _, cached_b = run(engine, "b", ids, [other])
    assert cached_b == item.offset // 4 * 4  # stops before the block holding the clip
    tokens_c, cached_c = run(engine, "c", ids, [item])
    assert cached_c == (len(ids) - 1) // 4 * 4 and tokens_c == tokens_a


def test_encoder_cache_encodes_a_repeated_clip_once(asr) -> None:
    model_dir, _ = asr
    engine = make_engine(model_dir, enable_prefix_caching=False, max_num_batched_tokens=16)
    ids, item = asr_prompt(tone(2.0))
    first, _ = run(engine, "a", ids, [item])
    assert engine.runner.vision.num_encoded == 1  # once, though chunks split the clip
    again, _ = run(engine, "b", ids, [item])
    assert engine.runner.vision.num_encoded == 1 and again == first


def test_audio_is_checked_against_the_prompt_and_the_model(asr, qwen3_tiny_dir) -> None:
    model_dir, _ = asr
    ids, item = asr_prompt(tone(1.5))
    with pytest.raises(InvalidRequest, match="does not accept audio"):
        make_engine(qwen3_tiny_dir).add_request(EngineRequest("x", ids, GREEDY, [item]))
    engine = make_engine(model_dir)
    bad = [
        (MultiModalInput("audio", item.pixel_values, (0, 0, 0), "h", item.offset,
                         item.length - 1, audio_frames=item.audio_frames), "placeholder"),
        (MultiModalInput("audio", item.pixel_values[:, :50], (0, 0, 0), "h", item.offset,
                         item.length, audio_frames=item.audio_frames), "whole chunks"),
        (MultiModalInput("audio", item.pixel_values, (0, 0, 0), "h", item.offset + 1,
                         item.length, audio_frames=item.audio_frames), "placeholder"),
    ]
    for i, (wrong, match) in enumerate(bad):
        with pytest.raises(InvalidRequest, match=match):
            engine.add_request(EngineRequest(f"b{i}", ids, GREEDY, [wrong]))
    with pytest.raises(InvalidRequest, match="without audio"):
        engine.add_request(EngineRequest("none", ids, GREEDY, []))
    assert not engine.has_unfinished()
