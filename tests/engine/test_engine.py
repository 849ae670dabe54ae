"""The real engine on the tiny presets: parity with transformers, batching, sampling, limits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dashserve.contracts.outputs import FinishReason
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.engine.async_engine import AsyncEngine
from dashserve.engine.engine import EngineConfig, LLMEngine
from dashserve.engine.scheduler import ScheduledChunk
from dashserve.engine.sequence import Sequence
from dashserve.errors import InvalidRequest, PromptTooLong
from dashserve.llm import LLM
from tests.utils.waiting import until

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)


def make_engine(model_dir: Path, **kw) -> LLMEngine:
    opts = dict(dtype="fp32", max_model_len=512, max_num_seqs=16, max_num_batched_tokens=64)
    opts.update(kw)
    return LLMEngine(EngineConfig(model=str(model_dir), **opts))


def run(engine: LLMEngine, prompts: dict[str, tuple[list[int], SamplingParams]]) -> dict:
    out: dict[str, dict[int, list[int]]] = {}
    for rid, (ids, p) in prompts.items():
        engine.add_request(EngineRequest(rid, ids, p))
        out[rid] = {}
    while engine.has_unfinished():
        for ev in engine.step():
            out[ev.request_id].setdefault(ev.index, []).extend(ev.token_ids)
    return out


def assert_idle(engine: LLMEngine) -> None:
    """Nothing waits or runs and every KV block is free (cached blocks count as free)."""
    stats = engine.stats()
    assert not engine.has_unfinished()
    assert stats.num_waiting == stats.num_running == 0
    assert stats.num_kv_blocks_free == stats.num_kv_blocks_total


def random_ids(n: int, seed: int) -> list[int]:
    return torch.randint(100, 150000, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.fixture(scope="module")
def engine(qwen3_tiny_dir: Path) -> LLMEngine:
    return make_engine(qwen3_tiny_dir)


@pytest.mark.parametrize("preset", ["qwen3-tiny", "qwen3-tiny-untied", "qwen2.5-tiny", "qwen3-moe-tiny"])
def test_logits_and_greedy_tokens_match_transformers(model_dir_factory, preset: str) -> None:
    from transformers import AutoModelForCausalLM

    model_dir = model_dir_factory(preset, dtype="fp32")
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = random_ids(40, seed=3)
    with torch.inference_mode():
        ref = hf.generate(torch.tensor([ids]), max_new_tokens=12, min_new_tokens=12,
                          do_sample=False, pad_token_id=151643)[0, 40:].tolist()
        ref_logits = hf(torch.tensor([ids])).logits[0, -1]
    engine = make_engine(model_dir, max_num_batched_tokens=16)  # forces chunked prefill
    engine.add_request(EngineRequest("a", ids, GREEDY))
    tokens: list[int] = []
    while engine.has_unfinished():
        for ev in engine.step():
            tokens.extend(ev.token_ids)
    assert tokens == ref
    seq = Sequence(999, "x", 0, list(ids), len(ids), GREEDY, 512, 0.0)
    engine.block_manager.allocate(seq)
    seq.num_computed_tokens = 0
    logits = engine.runner.execute([], [ScheduledChunk(seq, len(ids))])[0]
    engine.block_manager.free(seq)
    assert torch.allclose(logits, ref_logits, atol=1e-4), (logits - ref_logits).abs().max()


def test_batched_greedy_equals_one_at_a_time(engine: LLMEngine) -> None:
    prompts = {f"r{i}": (random_ids(10 + 7 * i, seed=i), GREEDY) for i in range(6)}
    alone = {rid: run(engine, {rid: v})[rid] for rid, v in prompts.items()}
    together = run(engine, prompts)
    assert together == alone


def test_seeded_sampling_is_batch_invariant(engine: LLMEngine) -> None:
    p = SamplingParams(temperature=0.9, top_p=0.9, top_k=50, seed=1234, max_tokens=10, ignore_eos=True)
    ids = random_ids(20, seed=11)
    alone = run(engine, {"s": (ids, p)})["s"]
    others = {f"o{i}": (random_ids(15, seed=100 + i), SamplingParams(temperature=1.0, max_tokens=8))
              for i in range(5)}
    mixed = run(engine, {"s": (ids, p), **others})["s"]
    assert mixed == alone
    other_seed = run(engine, {"s": (ids, SamplingParams(
        temperature=0.9, top_p=0.9, top_k=50, seed=99, max_tokens=10, ignore_eos=True))})["s"]
    assert other_seed != alone


def test_n_samples_share_prompt_and_differ(engine: LLMEngine) -> None:
    p = SamplingParams(temperature=1.0, seed=5, n=4, max_tokens=6, ignore_eos=True)
    out = run(engine, {"n": (random_ids(37, seed=2), p)})["n"]
    assert sorted(out) == [0, 1, 2, 3]
    assert all(len(t) == 6 for t in out.values())
    assert len({tuple(t) for t in out.values()}) > 1
    assert_idle(engine)


def test_max_tokens_and_counts(engine: LLMEngine) -> None:
    engine.add_request(EngineRequest("m", random_ids(9, seed=4), SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)))
    events = []
    while engine.has_unfinished():
        events.extend(engine.step())
    last = events[-1]
    assert last.finished and last.finish_reason == FinishReason.LENGTH
    assert last.num_prompt_tokens == 9 and last.num_output_tokens == 5
    assert sum(len(e.token_ids) for e in events) == 5


def test_stop_token_ids_and_stop_strings(engine: LLMEngine) -> None:
    ids = random_ids(12, seed=8)
    free_run = run(engine, {"f": (ids, GREEDY)})["f"][0]
    stop_tok = free_run[3]
    out = run(engine, {"t": (ids, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True,
                                                  stop_token_ids=(stop_tok,)))})["t"][0]
    assert out == free_run[: free_run.index(stop_tok) + 1]
    llm_text = engine.tokenizer.decode(free_run, skip_special_tokens=True)
    stop = llm_text[len(llm_text) // 2: len(llm_text) // 2 + 2]
    if stop.strip():
        engine.add_request(EngineRequest("s", ids, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=(stop,))))
        text, reason = "", None
        while engine.has_unfinished():
            for ev in engine.step():
                text += ev.text
                reason = ev.finish_reason or reason
        assert stop not in text and llm_text.startswith(text) and reason == FinishReason.STOP


def test_logprobs_and_top_logprobs(engine: LLMEngine) -> None:
    p = SamplingParams(temperature=0.7, seed=1, max_tokens=4, logprobs=True, top_logprobs=3, ignore_eos=True)
    engine.add_request(EngineRequest("l", random_ids(10, seed=6), p))
    entries = []
    while engine.has_unfinished():
        for ev in engine.step():
            entries.extend(ev.logprobs or [])
    assert len(entries) == 4
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        assert e.top_logprobs[0].logprob >= e.logprob - 1e-6
        assert bytes(e.bytes) == engine.tokenizer.token_bytes(e.token_id)


def test_invalid_requests_raise_before_scheduling(engine: LLMEngine) -> None:
    with pytest.raises(PromptTooLong) as exc:
        engine.add_request(EngineRequest("x", random_ids(600, seed=1), GREEDY))
    assert exc.value.param == "input"
    with pytest.raises(PromptTooLong) as exc:
        engine.add_request(EngineRequest("x", random_ids(10, seed=1), SamplingParams(max_tokens=510)))
    assert exc.value.param == "max_tokens"
    for kwargs, param in [({"n": 5}, "n"), ({"top_logprobs": 6}, "top_logprobs"),
                          ({"temperature": -0.1}, "temperature")]:
        with pytest.raises(InvalidRequest) as exc:
            SamplingParams(**kwargs)
        assert exc.value.param == param
    assert not engine.has_unfinished()


def test_thousand_requests_leave_the_cache_empty(qwen3_tiny_dir: Path) -> None:
    engine = make_engine(qwen3_tiny_dir, max_num_seqs=32, max_num_batched_tokens=256)
    for i in range(1000):
        p = SamplingParams(temperature=1.0, max_tokens=1 + i % 3, n=1 + i % 2)
        engine.add_request(EngineRequest(f"k{i}", random_ids(5 + i % 40, seed=i), p))
        if i % 7 == 0:
            engine.step()
        if i % 11 == 0:
            engine.abort(f"k{i}")
    while engine.has_unfinished():
        engine.step()
    assert_idle(engine)


def test_preemption_under_a_tiny_cache_completes_everything(qwen3_tiny_dir: Path) -> None:
    engine = make_engine(qwen3_tiny_dir, kv_cache_gb=40 * 16 * 512 / 2**30, max_model_len=256)
    assert engine.stats().num_kv_blocks_total < 60
    prompts = {f"p{i}": (random_ids(60, seed=i), SamplingParams(temperature=0, max_tokens=60, ignore_eos=True))
               for i in range(8)}
    out = run(engine, prompts)
    assert engine.stats().num_preemptions > 0
    assert all(len(v[0]) == 60 for v in out.values())
    alone = run(engine, {"p0": prompts["p0"]})["p0"]
    assert out["p0"] == alone
    assert_idle(engine)


def test_offline_llm_api(qwen3_tiny_dir: Path) -> None:
    llm = LLM(model=str(qwen3_tiny_dir), dtype="fp32", max_model_len=256)
    outs = llm.generate(["你好, world", "def f(x):"], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
    assert [len(o.outputs[0].token_ids) for o in outs] == [5, 5]
    assert outs[0].num_prompt_tokens == len(llm.tokenizer.encode("你好, world"))
    chat = llm.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=3))
    assert chat.num_output_tokens <= 3


async def test_async_engine_streams_and_aborts(qwen3_tiny_dir: Path) -> None:
    engine = AsyncEngine(make_engine(qwen3_tiny_dir))
    try:
        events = [e async for e in engine.submit(EngineRequest("a", random_ids(8, seed=1), GREEDY))]
        assert events[-1].finished and sum(len(e.token_ids) for e in events) == 12
        long = SamplingParams(max_tokens=400, ignore_eos=True)
        gen = engine.submit(EngineRequest("b", random_ids(8, seed=2), long))
        async for _ in gen:
            break
        await gen.aclose()
        await until(lambda: engine.stats().num_running + engine.stats().num_waiting == 0)
        stats = engine.stats()
        assert stats.num_waiting == 0 and stats.num_kv_blocks_free == stats.num_kv_blocks_total
        with pytest.raises(InvalidRequest):
            async for _ in engine.submit(EngineRequest("c", [], GREEDY)):
                pass
    finally:
        await engine.shutdown()


def test_thinking_budget_closes_the_block_and_the_answer_follows(engine: LLMEngine) -> None:
    tok = engine.tokenizer
    close = tok.encode("\n</think>\n\n")
    p = SamplingParams(temperature=0.8, seed=3, max_tokens=6, ignore_eos=True,
                       starts_in_thinking=True, thinking_budget=5)
    engine.add_request(EngineRequest("think", random_ids(12, seed=9), p))
    tokens, last = [], None
    while engine.has_unfinished():
        for ev in engine.step():
            tokens.extend(ev.token_ids)
            last = ev
    assert tokens[5:5 + len(close)] == close
    # The forced close is neither reasoning nor answer: reasoning stops at the budget and
    # max_tokens bounds the answer alone (a thinking model's reasoning is not cut by it).
    assert last is not None and last.num_reasoning_tokens == 5
    assert last.finish_reason == FinishReason.LENGTH
    assert len(tokens) == 5 + len(close) + 6


def test_max_tokens_bounds_all_output_without_thinking(engine: LLMEngine) -> None:
    p = SamplingParams(temperature=0.8, seed=3, max_tokens=6, ignore_eos=True)
    engine.add_request(EngineRequest("plain", random_ids(12, seed=9), p))
    tokens = []
    while engine.has_unfinished():
        for ev in engine.step():
            tokens.extend(ev.token_ids)
    assert len(tokens) == 6


def test_constrained_and_free_requests_share_a_batch(engine: LLMEngine) -> None:
    import json

    from dashserve.contracts.params import StructuredOutputSpec

    schema = {"type": "object", "properties": {
        "city": {"type": "string", "enum": ["杭州", "Beijing"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2}},
        "required": ["city", "days", "tags"], "additionalProperties": False}
    constrained = SamplingParams(temperature=1.0, seed=4, max_tokens=60,
                                 structured=StructuredOutputSpec(json_schema=schema))
    free = SamplingParams(temperature=1.0, seed=4, max_tokens=10, ignore_eos=True)
    texts: dict[str, str] = {"j": "", "f": ""}
    reasons = {}
    engine.add_request(EngineRequest("j", random_ids(10, seed=1), constrained))
    engine.add_request(EngineRequest("f", random_ids(10, seed=2), free))
    while engine.has_unfinished():
        for ev in engine.step():
            texts[ev.request_id] += ev.text
            reasons[ev.request_id] = ev.finish_reason
    doc = json.loads(texts["j"])
    assert doc["city"] in ("杭州", "Beijing") and 1 <= doc["days"] <= 7 and len(doc["tags"]) <= 2
    assert reasons == {"j": FinishReason.STOP, "f": FinishReason.LENGTH}


def test_prefix_cache_reuses_full_blocks_and_reports_cached_tokens(qwen3_tiny_dir: Path) -> None:
    engine = make_engine(qwen3_tiny_dir)  # block size 16
    shared = random_ids(40, seed=21)
    counts = []
    for rid, tail in (("first", [7, 8]), ("second", [9, 10, 11])):
        engine.add_request(EngineRequest(rid, shared + tail, GREEDY))
        last = None
        while engine.has_unfinished():
            for ev in engine.step():
                last = ev
        assert last is not None
        counts.append(last.num_cached_tokens)
    assert counts == [0, 32]  # two full 16-token blocks of the shared prefix
    off = make_engine(qwen3_tiny_dir, enable_prefix_caching=False)
    for rid in ("a", "b"):
        off.add_request(EngineRequest(rid, shared + [1, 2], GREEDY))
        while off.has_unfinished():
            events = off.step()
            if events:
                last = events[-1]
    assert last.num_cached_tokens == 0


@pytest.mark.parametrize("preset", ["qwen3-tiny", "qwen2.5-tiny", "qwen3-moe-tiny"])
def test_cpu_bf16_fast_path_matches_plain_torch(model_dir_factory, preset: str) -> None:
    """bf16 on CPU runs fused projections, native linear/norm/rotary/attention kernels; the
    plain torch modules on the same weights give the same tokens and log-probabilities."""
    from dashserve.model.cpu_linear import NativeLinear, PackedLinear

    model_dir = model_dir_factory(preset, dtype="bf16")
    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True, logprobs=True,
                            top_logprobs=3)
    prompts = {f"r{i}": (random_ids(9 + 13 * i, seed=40 + i), params) for i in range(3)}
    results = []
    for pack in (True, False):
        engine = make_engine(model_dir, dtype="bf16", pack_weights=pack)
        attn = engine.runner.model.model.layers[0].self_attn
        assert (attn.qkv_proj is not None) == pack
        if pack:
            assert isinstance(attn.qkv_proj, (NativeLinear, PackedLinear))
        logprobs: dict[str, list] = {rid: [] for rid in prompts}
        tokens: dict[str, list[int]] = {rid: [] for rid in prompts}
        for rid, (ids, p) in prompts.items():
            engine.add_request(EngineRequest(rid, ids, p))
        while engine.has_unfinished():
            for ev in engine.step():
                tokens[ev.request_id].extend(ev.token_ids)
                logprobs[ev.request_id].extend(ev.logprobs or [])
        results.append((tokens, logprobs))
    (fast_tokens, fast_lp), (plain_tokens, plain_lp) = results
    assert fast_tokens == plain_tokens
    for rid in prompts:
        for a, b in zip(fast_lp[rid], plain_lp[rid], strict=True):
            assert [t.token_id for t in a.top_logprobs] == [t.token_id for t in b.top_logprobs]
            for ta, tb in zip(a.top_logprobs, b.top_logprobs, strict=True):
                assert abs(ta.logprob - tb.logprob) < 0.05
