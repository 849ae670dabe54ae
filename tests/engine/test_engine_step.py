"""LLMEngine around a fake runner that returns chosen logits: no weights, no forward pass.

The engine's own work is what is tested: finishing on stop tokens, stop strings and length,
forks for n > 1, aborts, preemption and explicit-cache counts, and that every KV block is
free again once the requests are gone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dashserve.contracts.outputs import EngineEvent, FinishReason
from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.engine.engine import EngineConfig, LLMEngine
from dashserve.engine.runner import CacheConfig
from dashserve.engine.scheduler import ScheduledChunk
from dashserve.engine.sequence import Sequence
from dashserve.errors import InvalidRequest, PromptTooLong
from dashserve.model.config import ModelConfig
from tests.utils.fake_tokenizer import SPECIAL_IDS, VOCAB_SIZE, FakeTokenizer

EOS = SPECIAL_IDS["<|im_end|>"]
GREEDY = SamplingParams(temperature=0.0, max_tokens=8)

Choice = Callable[[Sequence], int | list[int]]


class StepTokenizer(FakeTokenizer):
    """The fake tokenizer with the id tables the engine's detokenizer reads."""

    def __init__(self) -> None:
        super().__init__()
        self.special_ids = frozenset(SPECIAL_IDS.values())
        self.id_to_bytes = [self.token_bytes(i) for i in range(VOCAB_SIZE)]


def model_config(max_len: int) -> ModelConfig:
    return ModelConfig(
        architecture="Qwen3ForCausalLM", vocab_size=VOCAB_SIZE, hidden_size=8,
        intermediate_size=16, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
        head_dim=8, rms_norm_eps=1e-6, rope_theta=1e4, max_position_embeddings=max_len,
        tie_word_embeddings=True, torch_dtype="float32", attention_bias=False, qk_norm=True,
        eos_token_ids=(EOS,),
    )


def echo_next(seq: Sequence) -> int:
    """A deterministic "model": the next token depends only on the tokens so far."""
    return 300 + sum(seq.token_ids) % 200


class FakeRunner:
    """Implements StepRunner. ``choose(seq)`` names the token a sampling chunk's logits
    favour (or a list of tokens, equally likely). Records every step and block copy."""

    def __init__(self, choose: Choice = echo_next, num_blocks: int = 64, block_size: int = 4,
                 max_model_len: int = 128) -> None:
        self.choose = choose
        self.model_dir = Path("fake-model")
        self.model_config = model_config(max_model_len)
        self.cache = CacheConfig(block_size, num_blocks, max_model_len)
        self.weight_bytes = 0
        self.kernels_pending = False
        self.steps: list[tuple[list[ScheduledChunk], list[ScheduledChunk]]] = []
        self.copies: list[tuple[int, int]] = []

    def execute(self, decodes: list[ScheduledChunk],
                prefills: list[ScheduledChunk]) -> torch.Tensor:
        self.steps.append((list(decodes), list(prefills)))
        rows = []
        for chunk in decodes + prefills:
            if not chunk.samples:
                continue
            row = torch.zeros(VOCAB_SIZE)
            row[torch.tensor(self.choose(chunk.seq))] = 30.0
            rows.append(row)
        return torch.stack(rows) if rows else torch.empty(0, VOCAB_SIZE)

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        self.copies.extend(pairs)

    def attach_kernels(self) -> int:
        return 0


def make_engine(runner: FakeRunner | None = None, **kw: object) -> LLMEngine:
    opts: dict[str, object] = dict(max_num_seqs=8, max_num_batched_tokens=32, block_size=4)
    opts.update(kw)
    return LLMEngine(EngineConfig(model="fake-model", **opts), runner=runner or FakeRunner(),
                     tokenizer=StepTokenizer())


def drain(engine: LLMEngine) -> list[EngineEvent]:
    events: list[EngineEvent] = []
    for _ in range(1000):
        if not engine.has_unfinished():
            return events
        events.extend(engine.step())
    raise AssertionError("the engine did not finish its requests")


def script(by_request: dict[str, list[int]]) -> Choice:
    """Each request emits its listed tokens in order, then token 400."""
    def choose(seq: Sequence) -> int:
        tokens = by_request.get(seq.request_id, [])
        return tokens[seq.num_output_tokens] if seq.num_output_tokens < len(tokens) else 400
    return choose


def assert_all_blocks_free(engine: LLMEngine) -> None:
    stats = engine.stats()
    assert stats.num_running == stats.num_waiting == 0
    assert stats.num_kv_blocks_free == stats.num_kv_blocks_total


def by_index(events: list[EngineEvent], request_id: str) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for ev in events:
        if ev.request_id == request_id:
            out.setdefault(ev.index, []).extend(ev.token_ids)
    return out


def test_an_engine_builds_around_a_runner_without_weights() -> None:
    engine = make_engine(FakeRunner(num_blocks=10, max_model_len=64))
    stats = engine.stats()
    assert stats.num_kv_blocks_total == 10 and engine.max_model_len == 64
    assert engine.eos_token_ids == {EOS, *StepTokenizer().stop_token_ids}


def test_stop_token_and_length_finish_in_one_batch() -> None:
    runner = FakeRunner(script({"s": [ord("h"), ord("i"), EOS, 401]}))
    engine = make_engine(runner)
    engine.add_request(EngineRequest("s", [10, 11, 12, 13, 14], SamplingParams(temperature=0, max_tokens=8)))
    engine.add_request(EngineRequest("l", [20, 21, 22], SamplingParams(temperature=0, max_tokens=3)))
    events = drain(engine)
    last = {ev.request_id: ev for ev in events}
    assert by_index(events, "s") == {0: [ord("h"), ord("i"), EOS]}
    assert "".join(ev.text for ev in events if ev.request_id == "s") == "hi"
    assert last["s"].finish_reason == FinishReason.STOP and last["s"].finished
    assert last["l"].finish_reason == FinishReason.LENGTH and last["l"].num_output_tokens == 3
    assert [ev.finished for ev in events].count(True) == 2
    assert len(runner.steps) == 3  # one prefill step, two decodes: both end in the third
    assert_all_blocks_free(engine)


def test_ignore_eos_masks_the_end_token_and_stop_token_ids_end_early() -> None:
    engine = make_engine(FakeRunner(script({"e": [EOS] * 4, "t": [401, 402, 403]})))
    engine.add_request(EngineRequest("e", [1, 2, 3], SamplingParams(temperature=0, max_tokens=4,
                                                      ignore_eos=True)))
    engine.add_request(EngineRequest("t", [1, 2, 3], SamplingParams(temperature=0, max_tokens=4,
                                                      stop_token_ids=(402,))))
    events = drain(engine)
    assert EOS not in by_index(events, "e")[0] and len(by_index(events, "e")[0]) == 4
    assert by_index(events, "t") == {0: [401, 402]}


def test_stop_string_cuts_the_text_before_it() -> None:
    text = b"xxabyy"
    engine = make_engine(FakeRunner(script({"r": list(text)})))
    engine.add_request(EngineRequest("r", [5, 6, 7], SamplingParams(temperature=0, max_tokens=6, stop=("ab",))))
    events = drain(engine)
    assert "".join(ev.text for ev in events) == "xx"
    assert events[-1].finish_reason == FinishReason.STOP and events[-1].num_output_tokens == 4


def test_n_samples_fork_once_the_prompt_is_computed() -> None:
    runner = FakeRunner(lambda seq: list(range(300, 340)))  # 40 equally likely tokens
    engine = make_engine(runner, max_num_batched_tokens=4)
    params = SamplingParams(temperature=1.0, seed=7, n=3, max_tokens=5)
    engine.add_request(EngineRequest("n", list(range(30, 40)), params))  # 10 tokens: a partial third block
    events = drain(engine)
    samples = by_index(events, "n")
    assert sorted(samples) == [0, 1, 2] and all(len(t) == 5 for t in samples.values())
    assert len({tuple(t) for t in samples.values()}) > 1  # own generators
    assert len(runner.copies) == 2  # each child copies the partial block, shares the rest
    assert [ev.finished for ev in events].count(True) == 1 and events[-1].finished
    # prefill in chunks of 4: the forks join only after the chunk that samples
    assert [len(d) for d, _ in runner.steps[:4]] == [0, 0, 0, 3]
    assert_all_blocks_free(engine)


def test_seeded_samples_repeat() -> None:
    def run() -> dict[int, list[int]]:
        engine = make_engine(FakeRunner(lambda seq: list(range(300, 340))))
        engine.add_request(EngineRequest("n", [1, 2, 3, 4, 5], SamplingParams(temperature=1.0, seed=3, n=2,
                                                                max_tokens=6)))
        return by_index(drain(engine), "n")

    assert run() == run()


@pytest.mark.parametrize("steps_before", [0, 1, 3])
def test_abort_finishes_every_sample_and_frees_its_blocks(steps_before: int) -> None:
    engine = make_engine()
    engine.add_request(EngineRequest("a", list(range(1, 12)), SamplingParams(temperature=0.5, n=2,
                                                               max_tokens=50)))
    engine.add_request(EngineRequest("b", [1, 2, 3], SamplingParams(temperature=0, max_tokens=50)))
    for _ in range(steps_before):
        engine.step()
    events = engine.abort("a")
    assert events and all(ev.finish_reason == FinishReason.ABORT for ev in events)
    assert events[-1].finished and [ev.finished for ev in events].count(True) == 1
    assert engine.abort("a") == []  # gone: a second abort is a no-op
    engine.add_request(EngineRequest("a", [9, 9, 9], GREEDY))  # the id is free again
    events = drain(engine)
    assert {ev.request_id for ev in events if ev.finished} == {"a", "b"}
    assert_all_blocks_free(engine)


def test_preemption_under_a_tiny_cache_completes_everything_unchanged() -> None:
    prompts = {f"p{i}": [50 + i] * 9 + [i] for i in range(4)}
    params = SamplingParams(temperature=0, max_tokens=14)
    alone = {}
    for rid, ids in prompts.items():
        engine = make_engine()
        engine.add_request(EngineRequest(rid, ids, params))
        alone[rid] = by_index(drain(engine), rid)[0]
    engine = make_engine(FakeRunner(num_blocks=14))  # 4 x 6 blocks would be needed at once
    for rid, ids in prompts.items():
        engine.add_request(EngineRequest(rid, ids, params))
    events = drain(engine)
    assert engine.stats().num_preemptions > 0
    assert {rid: by_index(events, rid)[0] for rid in prompts} == alone
    assert_all_blocks_free(engine)


def test_prefix_cache_and_explicit_cache_counts_in_events() -> None:
    engine = make_engine()
    prefix = list(range(100, 112))  # three blocks of 4
    pin = SamplingParams(temperature=0, max_tokens=2, pin_prefix_tokens=12)
    engine.add_request(EngineRequest("first", prefix + [1, 2], pin))
    first = drain(engine)[-1]
    assert first.num_cached_tokens == 0 and first.num_cache_created_tokens == 12
    assert engine.stats().num_kv_blocks_pinned == 3
    engine.add_request(EngineRequest("second", prefix + [3], pin))
    second = drain(engine)[-1]
    assert second.num_cached_tokens == 12 and second.num_cache_created_tokens == 0
    engine.add_request(EngineRequest("plain", prefix[:8] + [7, 7], GREEDY))
    assert drain(engine)[-1].num_cached_tokens == 8


def test_invalid_requests_raise_before_anything_is_scheduled() -> None:
    engine = make_engine(FakeRunner(max_model_len=32))
    with pytest.raises(PromptTooLong):
        engine.add_request(EngineRequest("x", [1] * 32, GREEDY))
    with pytest.raises(PromptTooLong) as exc:
        engine.add_request(EngineRequest("x", [1] * 30, SamplingParams(max_tokens=8)))
    assert exc.value.param == "max_tokens"
    with pytest.raises(InvalidRequest):
        engine.add_request(EngineRequest("x", [VOCAB_SIZE], GREEDY))
    with pytest.raises(InvalidRequest):
        engine.add_request(EngineRequest("x", [], GREEDY))
    engine.add_request(EngineRequest("x", [1, 2], GREEDY))
    with pytest.raises(InvalidRequest) as exc:
        engine.add_request(EngineRequest("x", [1, 2], GREEDY))
    assert exc.value.param == "request_id"
    assert engine.stats().num_waiting == 1


@pytest.mark.parametrize("module", ["stepper", "scheduler", "request_table", "runner", "config"])
def test_the_stages_do_not_reach_back_into_the_engine(module: str) -> None:
    """The engine wires its stages; none of them imports it (not even for type checking)."""
    import ast

    import dashserve.engine

    path = Path(dashserve.engine.__file__).parent / f"{module}.py"
    imported = {node.module for node in ast.walk(ast.parse(path.read_text("utf-8")))
                if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(ast.parse(path.read_text("utf-8")))
                 if isinstance(node, ast.Import) for alias in node.names}
    assert not imported & {"dashserve.engine.engine", "dashserve.engine.async_engine"}
