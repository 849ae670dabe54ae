"""Sequence: one sample of one request as it moves through the scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import torch

from dashserve.contracts.multimodal import MultiModalInput
from dashserve.contracts.outputs import FinishReason
from dashserve.contracts.params import SamplingParams


class SequenceStatus(IntEnum):
    """Ordered: anything above PREEMPTED is finished."""

    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED_STOPPED = 3
    FINISHED_LENGTH = 4
    FINISHED_ABORTED = 5

    @property
    def is_finished(self) -> bool:
        return self > SequenceStatus.PREEMPTED


FINISH_REASONS = {
    SequenceStatus.FINISHED_STOPPED: FinishReason.STOP,
    SequenceStatus.FINISHED_LENGTH: FinishReason.LENGTH,
    SequenceStatus.FINISHED_ABORTED: FinishReason.ABORT,
}


@dataclass(eq=False)
class Sequence:
    """Token ids (prompt then output), KV blocks and progress of one sample.

    ``num_computed_tokens`` counts tokens whose K/V are in the cache; the sequence samples
    its next token in the step that computes its last uncomputed token. A sequence with
    more than one uncomputed token is (re)filling its prompt, chunk by chunk.
    """

    seq_id: int
    request_id: str
    index: int  # sample index within the request (0..n-1)
    token_ids: list[int]
    num_prompt_tokens: int
    params: SamplingParams
    max_total_tokens: int  # prompt + output may not exceed this
    arrival_time: float
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache at first admission
    num_pin_created_tokens: int | None = None  # explicit cache: set once the prefix is pinned
    num_reasoning_tokens: int = 0  # generated inside the thinking block (forced close excluded)
    num_answer_tokens: int = 0  # generated after it (forced close excluded)
    in_thinking: bool = False
    # samples 1..n-1 are forked from sample 0 once the prompt is computed
    pending_forks: int = 0
    generator_seed: int | None = None
    # vision models: images/videos in the prompt, their M-RoPE positions [3, prompt tokens]
    # and the shift of every later position (decode position = token index + mrope_delta)
    mm_inputs: tuple[MultiModalInput, ...] = ()
    mrope_positions: torch.Tensor | None = None
    mrope_delta: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_uncomputed(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def finish_reason(self) -> FinishReason | None:
        return FINISH_REASONS.get(self.status)
