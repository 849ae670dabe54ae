"""Per-row sampling of a batch of logits: penalties, temperature, top-k/top-p/min-p, seeds, logprobs.

Every row carries its own parameters and its own ``torch.Generator``, and is processed on its
own slice, so a seeded request gives the same tokens whatever else shares the batch.
Sampling inverts the cumulative distribution of the filtered probabilities with one uniform
draw per row: exact, and far cheaper than drawing noise for the whole vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dashserve.contracts.params import SamplingParams

NEG_INF = float("-inf")


@dataclass(slots=True)
class RowInput:
    """What the sampler needs for one row of logits."""

    params: SamplingParams
    generator: torch.Generator | None
    prompt_token_ids: list[int]
    output_token_ids: list[int]


@dataclass(slots=True)
class RowOutput:
    token_id: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None  # (token id, logprob), most likely first


def apply_penalties(logits: torch.Tensor, row: RowInput) -> None:
    """In place on one row [V]: repetition (multiplicative, prompt + output), presence and
    frequency (additive, output only; OpenAI semantics)."""
    p = row.params
    if p.repetition_penalty != 1.0:
        seen = torch.unique(
            torch.tensor(row.prompt_token_ids + row.output_token_ids, dtype=torch.long))
        vals = logits[seen]
        logits[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and row.output_token_ids:
        ids, counts = torch.unique(
            torch.tensor(row.output_token_ids, dtype=torch.long), return_counts=True)
        logits[ids] -= p.presence_penalty + p.frequency_penalty * counts.to(logits.dtype)


def _candidates(logits: torch.Tensor, p: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Filtered log-probabilities over a candidate set. Returns (logprobs, ids) where ids is
    None when the candidates are the whole vocabulary."""
    scaled = logits / p.temperature
    top_k = p.effective_top_k
    ids: torch.Tensor | None = None
    if top_k is not None:
        scaled, ids = torch.topk(scaled, min(top_k, scaled.shape[0]))
    elif p.top_p < 1.0:
        scaled, ids = torch.sort(scaled, descending=True)
    logprobs = torch.log_softmax(scaled, dim=-1)
    if p.top_p < 1.0:  # candidates are sorted here
        probs = logprobs.exp()
        cum = probs.cumsum(0)
        keep = (cum - probs) < p.top_p  # keep the smallest prefix reaching top_p (always >= 1)
        logprobs = torch.where(keep, logprobs, NEG_INF)
    if p.min_p > 0.0:
        threshold = logprobs.max() + torch.log(torch.tensor(p.min_p))
        logprobs = torch.where(logprobs >= threshold, logprobs, NEG_INF)
    if p.top_p < 1.0 or p.min_p > 0.0:
        logprobs = torch.log_softmax(logprobs, dim=-1)
    return logprobs, ids


def sample_row(logits: torch.Tensor, row: RowInput) -> RowOutput:
    """Sample one token from one row [V] of float32 logits (already masked)."""
    p = row.params
    apply_penalties(logits, row)
    if p.is_greedy:
        token = int(torch.argmax(logits))
        if not p.logprobs:
            return RowOutput(token)
        logprobs = torch.log_softmax(logits, dim=-1)
        return RowOutput(token, float(logprobs[token]), _top(logprobs, None, p.top_logprobs))
    logprobs, ids = _candidates(logits, p)
    cdf = logprobs.exp().cumsum(0, dtype=torch.float64)
    u = torch.rand(1, generator=row.generator, dtype=torch.float64) * cdf[-1]
    pick = min(int(torch.searchsorted(cdf, u, right=True)), cdf.shape[0] - 1)
    token = int(ids[pick]) if ids is not None else pick
    if not p.logprobs:
        return RowOutput(token)
    return RowOutput(token, float(logprobs[pick]), _top(logprobs, ids, p.top_logprobs))


def _top(logprobs: torch.Tensor, ids: torch.Tensor | None, k: int) -> list[tuple[int, float]]:
    if k == 0:
        return []
    vals, pos = torch.topk(logprobs, min(k, logprobs.shape[0]))
    token_ids = ids[pos] if ids is not None else pos
    return [(int(t), float(v)) for t, v in zip(token_ids.tolist(), vals.tolist(), strict=True)]


def sample(logits: torch.Tensor, rows: list[RowInput], num_valid_ids: int) -> list[RowOutput]:
    """Sample every row of ``logits`` [B, V]; ids at or above ``num_valid_ids`` (padding of
    the embedding beyond the tokenizer) are never chosen."""
    logits = logits.float()
    if num_valid_ids < logits.shape[1]:
        logits[:, num_valid_ids:] = NEG_INF
    return [sample_row(logits[i], row) for i, row in enumerate(rows)]


def make_generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen
