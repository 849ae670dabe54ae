"""RequestTable: the requests in flight, their samples and forks, and the ids they draw from."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from dashserve.contracts.params import StructuredOutputSpec
from dashserve.engine.detokenize import IncrementalDetokenizer
from dashserve.engine.request_state import RequestState, SampleState, sample_seed
from dashserve.engine.sequence import Sequence
from dashserve.sampling.sampler import make_generator
from dashserve.tokenizer import Tokenizer


class RequestTable:
    """Every unfinished request by id, with each sample's Sequence and private state
    (detokenizer, generator, grammar matcher). Sequence ids are unique across the table's
    life; the grammar compiler is made on the first constrained request.

    Iterating yields request ids; ``in`` and ``len`` count unfinished requests.
    """

    def __init__(self, tokenizer: Tokenizer, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._requests: dict[str, RequestState] = {}
        self._seq_ids = itertools.count()
        self.grammar_compiler: Any | None = None

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._requests

    def __iter__(self) -> Iterator[str]:
        return iter(self._requests)

    def __len__(self) -> int:
        return len(self._requests)

    def get(self, request_id: str) -> RequestState | None:
        return self._requests.get(request_id)

    def __getitem__(self, request_id: str) -> RequestState:
        return self._requests[request_id]

    def next_seq_id(self) -> int:
        return next(self._seq_ids)

    def compile_grammar(self, spec: StructuredOutputSpec) -> Any:
        """A compiled grammar for ``spec`` (raises InvalidParameter for a bad schema)."""
        if self.grammar_compiler is None:
            from dashserve.sampling.structured import GrammarCompiler

            self.grammar_compiler = GrammarCompiler(self.tokenizer, self.vocab_size)
        return self.grammar_compiler.compile(spec)

    def add(self, state: RequestState, first: Sequence) -> SampleState:
        """Register a new request with its first sample (index 0)."""
        sample = self._new_sample(state, first)
        state.samples[first.index] = sample
        self._requests[state.request_id] = state
        return sample

    def fork(self, state: RequestState, parent: Sequence, index: int) -> SampleState:
        """Sample ``index`` of the request, a copy of ``parent`` as its prompt is computed:
        same tokens and computed prefix, its own generator and detokenizer."""
        child = Sequence(
            seq_id=self.next_seq_id(), request_id=parent.request_id, index=index,
            token_ids=list(parent.token_ids), num_prompt_tokens=parent.num_prompt_tokens,
            params=parent.params, max_total_tokens=parent.max_total_tokens,
            arrival_time=parent.arrival_time, in_thinking=parent.params.starts_in_thinking,
            num_cached_tokens=parent.num_cached_tokens, mm_inputs=parent.mm_inputs,
            mrope_positions=parent.mrope_positions, mrope_delta=parent.mrope_delta,
        )
        sample = self._new_sample(state, child)
        state.samples[index] = sample
        return sample

    def remove(self, request_id: str) -> None:
        del self._requests[request_id]

    def _new_sample(self, state: RequestState, seq: Sequence) -> SampleState:
        p = state.params
        skip = self.tokenizer.special_ids if p.skip_special_tokens else frozenset()
        detok = IncrementalDetokenizer(self.tokenizer.id_to_bytes, skip, p.stop)
        matcher = None
        if state.compiled_grammar is not None:
            assert self.grammar_compiler is not None
            matcher = self.grammar_compiler.matcher(state.compiled_grammar)
        gen = make_generator(sample_seed(p.seed, seq.index))
        return SampleState(seq, detok, gen, matcher)
