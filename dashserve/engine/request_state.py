"""Per-request bookkeeping inside the engine: its samples, detokenizers, generators, grammars."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from dashserve.contracts.params import SamplingParams
from dashserve.engine.detokenize import IncrementalDetokenizer
from dashserve.engine.sequence import Sequence


@dataclass(eq=False)
class SampleState:
    """One sample's private state next to its Sequence."""

    seq: Sequence
    detokenizer: IncrementalDetokenizer
    generator: torch.Generator
    matcher: Any | None = None  # a grammar matcher when output is constrained
    forced: deque[int] = field(default_factory=deque)  # tokens the engine emits next, in order


@dataclass(eq=False)
class RequestState:
    request_id: str
    params: SamplingParams
    num_prompt_tokens: int
    samples: dict[int, SampleState] = field(default_factory=dict)  # by sample index
    compiled_grammar: Any | None = None
    num_finished: int = 0

    @property
    def is_finished(self) -> bool:
        return self.num_finished == self.params.n


def sample_seed(seed: int | None, index: int) -> int | None:
    """Seed of sample ``index``: the request seed for sample 0, a fixed derivation for others."""
    if seed is None:
        return None
    return seed if index == 0 else (seed * 1_000_003 + index * 7_919) % (2**63)
