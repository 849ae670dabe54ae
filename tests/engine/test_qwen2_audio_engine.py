"""Qwen2-Audio on the engine: the qwen2-audio-tiny preset loaded by transformers' own
Qwen2AudioForConditionalGeneration and processor, its audio tokens at the published ids,
Whisper log-mel features, encoder rows, logits and greedy tokens against transformers, and
clips checked against the model's 30 s window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dashserve.contracts.audio_tokens import audio_token_count
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.engine.engine import EngineConfig, LLMEngine
from dashserve.engine.scheduler import ScheduledChunk
from dashserve.errors import InvalidRequest
from dashserve.multimodal.audio import audio_hash, log_mel
from tests.utils.audio import tone

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
# fp32 end to end: the features are bit-identical to the Whisper extractor's; logits agree to
# ~1e-6 (random weights make the clip move the last logits by ~1e-4 only, hence the tight
# bound; the encoder rows are compared on their own too)
ATOL = 5e-6
AUDIO, BOS, EOS = 151646, 151647, 151648


def make_engine(model_dir: Path, **kw) -> LLMEngine:
    opts = dict(dtype="fp32", max_model_len=1024, max_num_seqs=8, max_num_batched_tokens=512)
    opts.update(kw)
    return LLMEngine(EngineConfig(model=str(model_dir), **opts))


@pytest.fixture(scope="module")
def qwen2_audio(model_dir_factory):
    import transformers

    model_dir = model_dir_factory("qwen2-audio-tiny")
    hf = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32).eval()
    processor = transformers.AutoProcessor.from_pretrained(model_dir)
    return model_dir, hf, processor


def reference(processor, samples: np.ndarray, question: str = "What is it?"):
    """The processor's prompt and inputs for one clip, and our item placed in the same ids."""
    messages = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip"},
                                             {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, audio=[samples], sampling_rate=16000, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    feats, frames = log_mel(samples, 128, 3000, min_samples=0)
    offset = ids.index(AUDIO)
    item = MultiModalInput(kind="audio", pixel_values=feats, grid_thw=(0, 0, 0),
                           content_hash=audio_hash(samples), offset=offset,
                           length=ids.count(AUDIO), audio_frames=frames)
    return ids, item, inputs


def test_preset_has_the_published_audio_tokens_and_loads_in_transformers(qwen2_audio) -> None:
    model_dir, hf, processor = qwen2_audio
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids(["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]) == \
        [AUDIO, BOS, EOS]
    assert tok.encode("<|audio_bos|><|AUDIO|><|audio_eos|>") == [BOS, AUDIO, EOS]
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["audio_token_index"] == AUDIO == hf.config.audio_token_id
    from dashserve.tokenizer import Tokenizer

    ours = Tokenizer.from_dir(model_dir)
    assert ours.encode("<|audio_bos|><|AUDIO|><|audio_eos|>") == [BOS, AUDIO, EOS]


@pytest.mark.parametrize("seconds", [0.2, 3.37, 30.0])
def test_log_mel_matches_the_whisper_extractor(qwen2_audio, seconds: float) -> None:
    _, _, processor = qwen2_audio
    samples = tone(seconds)
    ref = processor.feature_extractor(samples, sampling_rate=16000, return_tensors="pt",
                                      return_attention_mask=True, padding="max_length")
    feats, frames = log_mel(samples, 128, 3000, min_samples=0)
    assert frames == int(ref["attention_mask"].sum())
    assert feats.shape == (128, 3000)
    assert torch.allclose(feats, ref["input_features"][0], atol=1e-5)
    assert audio_token_count(frames, 3000, "qwen2-audio") == \
        (((frames - 1) // 2 + 1) - 2) // 2 + 1


@pytest.mark.parametrize("budget", [512, 16])  # 16: chunked prefill splits the clip
def test_logits_and_greedy_tokens_match_transformers(qwen2_audio, budget: int) -> None:
    model_dir, hf, processor = qwen2_audio
    samples = tone(3.37)
    ids, item, inputs = reference(processor, samples)
    assert item.length == 84
    with torch.inference_mode():
        ref_logits = hf(**inputs).logits[0, -1]
        ref = hf.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                          pad_token_id=151643)[0, len(ids):].tolist()
    engine = make_engine(model_dir, max_num_batched_tokens=budget)
    engine.add_request(EngineRequest("a", ids, GREEDY, [item]))
    tokens: list[int] = []
    while engine.has_unfinished():
        for ev in engine.step():
            tokens.extend(ev.token_ids)
    assert tokens == ref
    engine.add_request(EngineRequest("b", ids, GREEDY, [item]))
    seq = engine.scheduler.waiting.popleft()
    engine.block_manager.allocate(seq)
    seq.num_computed_tokens = 0  # recompute the whole prompt, cached prefix or not
    logits = engine.runner.execute([], [ScheduledChunk(seq, len(ids))])[0]
    assert torch.allclose(logits, ref_logits, atol=ATOL), (logits - ref_logits).abs().max()
    other = tone(3.37, seed=5, freq=300.0)
    with torch.inference_mode():
        other_logits = hf(**reference(processor, other)[2]).logits[0, -1]
    assert (other_logits - ref_logits).abs().max() > 4 * ATOL  # the audio matters


def test_encoder_rows_match_transformers_for_clips_packed_together(qwen2_audio) -> None:
    model_dir, hf, processor = qwen2_audio
    engine = make_engine(model_dir)
    # 30 s: a clip filling the whole window (750 rows)
    clips = [tone(0.3, seed=3), tone(3.37), tone(1.0, seed=4, freq=800.0), tone(30.0, seed=6)]
    items = [reference(processor, c)[1] for c in clips]
    with torch.inference_mode():
        rows = engine.runner.model.encode_audio([it.pixel_values for it in items],
                                                [it.audio_frames for it in items])
        for clip, item, got in zip(clips, items, rows, strict=True):
            inputs = reference(processor, clip)[2]
            lengths = inputs["feature_attention_mask"].sum(-1)
            mask = (torch.arange(1500)[None, :] < ((lengths - 1) // 2 + 1)[:, None])
            from transformers.masking_utils import create_bidirectional_mask

            attn = create_bidirectional_mask(config=hf.model.audio_tower.config,
                                             inputs_embeds=torch.zeros(1, 1500, 1),
                                             attention_mask=mask.long())
            full = hf.model.multi_modal_projector(hf.model.audio_tower(
                inputs["input_features"], attention_mask=attn).last_hidden_state)[0]
            ref = full[:item.length]
            assert got.shape == (item.length, 64) == ref.shape
            assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    assert (rows[1][:4] - rows[2][:4]).abs().max() > 0.01  # different clips, different rows


def test_audio_is_checked_against_the_window_and_the_prompt(qwen2_audio) -> None:
    model_dir, _, processor = qwen2_audio
    ids, item, _ = reference(processor, tone(1.5))
    engine = make_engine(model_dir)
    too_long = MultiModalInput("audio", torch.zeros(128, 6000), (0, 0, 0), "h", item.offset,
                               item.length, audio_frames=3100)
    wrong_count = MultiModalInput("audio", item.pixel_values, (0, 0, 0), "h", item.offset,
                                  item.length - 1, audio_frames=item.audio_frames)
    for i, (bad, match) in enumerate([(too_long, "window"), (wrong_count, "placeholder")]):
        with pytest.raises(InvalidRequest, match=match):
            engine.add_request(EngineRequest(f"b{i}", ids, GREEDY, [bad]))
    assert not engine.has_unfinished()
