"""Sampler: greedy, top-k/top-p/min-p filtering, penalties, seeds, logprobs."""

from __future__ import annotations

import math

import torch

from dashserve.contracts.params import SamplingParams
from dashserve.sampling.sampler import RowInput, make_generator, sample, sample_row


def row(params: SamplingParams, seed: int | None = 0, prompt=(), output=()) -> RowInput:
    return RowInput(params, make_generator(seed), list(prompt), list(output))


def test_greedy_picks_argmax_and_masks_padding_ids() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 9.0]])
    out = sample(logits, [row(SamplingParams(temperature=0))], num_valid_ids=3)
    assert out[0].token_id == 1


def test_top_k_1_is_greedy_and_top_k_above_100_is_disabled() -> None:
    assert SamplingParams(top_k=1).is_greedy
    assert SamplingParams(top_k=101).effective_top_k is None
    assert SamplingParams(top_k=0).effective_top_k is None


def test_top_k_restricts_the_support() -> None:
    logits = torch.arange(50, dtype=torch.float32)
    p = SamplingParams(temperature=1.5, top_k=3)
    seen = {sample_row(logits.clone(), row(p, seed=s)).token_id for s in range(200)}
    assert seen <= {47, 48, 49} and len(seen) == 3


def test_top_p_keeps_the_smallest_prefix_reaching_p() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    p = SamplingParams(temperature=1.0, top_p=0.75)
    seen = {sample_row(logits.clone(), row(p, seed=s)).token_id for s in range(300)}
    assert seen == {0, 1}


def test_min_p_filters_relative_to_the_best_token() -> None:
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    p = SamplingParams(temperature=1.0, min_p=0.5)
    seen = {sample_row(logits.clone(), row(p, seed=s)).token_id for s in range(300)}
    assert seen == {0, 1}


def test_sampling_frequencies_follow_the_distribution() -> None:
    probs = torch.tensor([0.6, 0.3, 0.1])
    counts = [0, 0, 0]
    gen = make_generator(123)
    for _ in range(3000):
        r = RowInput(SamplingParams(temperature=1.0), gen, [], [])
        counts[sample_row(probs.log(), r).token_id] += 1
    assert abs(counts[0] / 3000 - 0.6) < 0.04 and abs(counts[2] / 3000 - 0.1) < 0.03


def test_same_seed_same_tokens_different_seed_differs() -> None:
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    p = SamplingParams(temperature=1.0)
    a = [sample_row(logits.clone(), row(p, seed=7)).token_id for _ in range(5)]
    b = [sample_row(logits.clone(), row(p, seed=7)).token_id for _ in range(5)]
    c = {sample_row(logits.clone(), row(p, seed=s)).token_id for s in range(20)}
    assert a == b and len(c) > 1


def test_repetition_penalty_divides_positive_and_multiplies_negative() -> None:
    logits = torch.tensor([2.0, -2.0, 1.0])
    p = SamplingParams(temperature=0, repetition_penalty=2.0, logprobs=True)
    out = sample_row(logits, row(p, prompt=[0], output=[1]))
    assert torch.allclose(logits, torch.tensor([1.0, -4.0, 1.0]))
    assert out.token_id in (0, 2)


def test_presence_and_frequency_penalties_apply_to_output_only() -> None:
    logits = torch.tensor([1.0, 1.0, 1.0])
    p = SamplingParams(temperature=0, presence_penalty=0.5, frequency_penalty=0.25)
    sample_row(logits, row(p, prompt=[2], output=[0, 0, 1]))
    assert torch.allclose(logits, torch.tensor([1.0 - 0.5 - 0.5, 1.0 - 0.5 - 0.25, 1.0]))


def test_logprobs_come_from_the_sampled_distribution() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    p = SamplingParams(temperature=0.5, top_k=2, logprobs=True, top_logprobs=2)
    out = sample_row(logits.clone(), row(p))
    scaled = torch.tensor([4.0, 2.0])
    expected = torch.log_softmax(scaled, 0)
    assert [t for t, _ in out.top] == [0, 1]
    assert math.isclose(out.top[0][1], float(expected[0]), rel_tol=1e-5)
    assert math.isclose(out.logprob, float(expected[out.token_id]), rel_tol=1e-5)
