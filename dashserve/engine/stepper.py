"""After the forward pass: fork samples, constrain and sample logits, append tokens, apply stops."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dashserve.contracts.chat_format import FORCED_THINK_CLOSE, think_token_ids
from dashserve.contracts.outputs import EngineEvent, TokenLogprob, TopLogprob
from dashserve.engine.request_state import RequestState, SampleState
from dashserve.engine.request_table import RequestTable
from dashserve.engine.scheduler import ScheduledChunk, Scheduler
from dashserve.engine.sequence import Sequence, SequenceStatus
from dashserve.sampling.sampler import NEG_INF, RowInput, RowOutput, sample
from dashserve.tokenizer import Tokenizer

BlockCopier = Callable[[list[tuple[int, int]]], None]  # (src, dst) KV blocks, before next step


class StepPostprocessor:
    """Turns one step's logits into new tokens and EngineEvents.

    It reads and updates the request table (samples, forks, finished requests) and asks the
    scheduler to admit forks and finish sequences; ``copy_blocks`` copies the KV blocks a
    fork must not share.
    """

    def __init__(self, table: RequestTable, scheduler: Scheduler, tokenizer: Tokenizer,
                 eos_token_ids: frozenset[int], copy_blocks: BlockCopier) -> None:
        self.table = table
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.copy_blocks = copy_blocks
        self.think_start_id, self.think_end_id = think_token_ids(tokenizer)
        self.think_close_ids = (tokenizer.encode(FORCED_THINK_CLOSE)
                                if self.think_end_id is not None else [])

    def process(self, chunks: list[ScheduledChunk], logits: torch.Tensor) -> list[EngineEvent]:
        items: list[tuple[RequestState, SampleState]] = []
        rows: list[int] = []
        copies: list[tuple[int, int]] = []
        for row, chunk in enumerate(chunks):
            state = self.table[chunk.seq.request_id]
            items.append((state, state.samples[chunk.seq.index]))
            rows.append(row)
            if chunk.seq.pending_forks:
                for child in self._fork(state, chunk.seq, copies):
                    items.append((state, child))
                    rows.append(row)
        self.copy_blocks(copies)
        if not items:
            return []
        batch = logits[torch.tensor(rows)] if len(rows) != logits.shape[0] else logits.clone()
        self._constrain(batch, items)
        row_inputs = [
            RowInput(s.seq.params, s.generator, s.seq.token_ids[: s.seq.num_prompt_tokens],
                     s.seq.output_token_ids)
            for _, s in items
        ]
        outs = sample(batch, row_inputs, self.tokenizer.vocab_size)
        return [self._append(state, s, out) for (state, s), out in zip(items, outs, strict=True)]

    def _fork(
        self, state: RequestState, parent: Sequence, copies: list[tuple[int, int]]
    ) -> list[SampleState]:
        children = []
        for index in range(1, parent.pending_forks + 1):
            child = self.table.fork(state, parent, index)
            pair = self.scheduler.add_fork(parent, child.seq)
            if pair is not None:
                copies.append(pair)
            children.append(child)
        parent.pending_forks = 0
        return children

    def _constrain(self, batch: torch.Tensor, items: list[tuple[RequestState, SampleState]]) -> None:
        """Mask end-of-sequence ids before min_tokens (or always with ignore_eos), and apply
        grammar masks to constrained rows outside a thinking block."""
        eos = list(self.eos_token_ids)
        grammar_rows, matchers = [], []
        for i, (_, s) in enumerate(items):
            p = s.seq.params
            grammar_done = s.matcher is not None and s.matcher.is_terminated()
            if (p.ignore_eos or s.seq.num_output_tokens < p.min_tokens) and not grammar_done:
                batch[i, eos] = NEG_INF
            if s.matcher is not None and not s.seq.in_thinking and not s.forced:
                grammar_rows.append(i)
                matchers.append(s.matcher)
        if grammar_rows:
            from dashserve.sampling.structured import apply_masks

            apply_masks(batch, grammar_rows, matchers)

    def _append(self, state: RequestState, s: SampleState, out: RowOutput) -> EngineEvent:
        seq, p = s.seq, s.seq.params
        forced = bool(s.forced)
        token = s.forced.popleft() if forced else out.token_id
        seq.token_ids.append(token)
        self._track_thinking(s, token, forced)
        if s.matcher is not None and not seq.in_thinking and token != self.think_end_id:
            s.matcher.accept_token(token)
        status = None
        if token in self.eos_token_ids or token in p.stop_token_ids:
            status = SequenceStatus.FINISHED_STOPPED
        else:
            s.detokenizer.push(token)
            if s.detokenizer.stopped:
                status = SequenceStatus.FINISHED_STOPPED
        if status is None and (seq.num_tokens >= seq.max_total_tokens or (
                p.starts_in_thinking and p.max_tokens is not None
                and seq.num_answer_tokens >= p.max_tokens)):
            status = SequenceStatus.FINISHED_LENGTH
        logprobs = [self._logprob(token, out)] if p.logprobs and not forced else None
        if status is not None:
            return self.finish(state, s, status, [token], logprobs)
        return self._event(state, s, [token], s.detokenizer.take(), logprobs)

    def _track_thinking(self, s: SampleState, token: int, forced: bool) -> None:
        """Count reasoning and answer tokens; close the block once the budget is spent.

        The forced close (``\n</think>\n\n``) counts as neither, so ``reasoning_tokens``
        never exceeds ``thinking_budget`` and ``max_tokens`` bounds the answer alone.
        """
        seq = s.seq
        if seq.in_thinking:
            if not forced:
                seq.num_reasoning_tokens += 1
            if token == self.think_end_id:
                seq.in_thinking = False
            elif (seq.params.thinking_budget is not None and not s.forced
                  and seq.num_reasoning_tokens >= seq.params.thinking_budget):
                s.forced.extend(self.think_close_ids)
        elif token == self.think_start_id and seq.num_output_tokens == 1:
            seq.in_thinking = True
            seq.num_reasoning_tokens += 1
        elif not forced:
            seq.num_answer_tokens += 1

    def _logprob(self, token: int, out: RowOutput) -> TokenLogprob:
        tok = self.tokenizer
        top = [TopLogprob(t, tok.token_str(t), list(tok.token_bytes(t)), lp) for t, lp in out.top or []]
        lp = out.logprob if out.logprob is not None else 0.0
        return TokenLogprob(token, tok.token_str(token), list(tok.token_bytes(token)), lp, top)

    def finish(
        self, state: RequestState, s: SampleState, status: SequenceStatus,
        token_ids: list[int] | None = None, logprobs: list[TokenLogprob] | None = None,
    ) -> EngineEvent:
        """End one sample: free its blocks, flush its text, close the request if it was last."""
        self.scheduler.finish(s.seq, status)
        state.num_finished += 1
        event = self._event(state, s, token_ids or [], s.detokenizer.take(final=True), logprobs)
        if state.is_finished:
            event.finished = True
            self.table.remove(state.request_id)
        return event

    def _event(
        self, state: RequestState, s: SampleState, token_ids: list[int], text: str,
        logprobs: list[TokenLogprob] | None,
    ) -> EngineEvent:
        seq = s.seq
        return EngineEvent(
            request_id=state.request_id, index=seq.index, token_ids=token_ids, text=text,
            finish_reason=seq.finish_reason, num_prompt_tokens=state.num_prompt_tokens,
            num_output_tokens=seq.num_output_tokens,
            num_cached_tokens=min(state.samples[0].seq.num_cached_tokens, state.num_prompt_tokens),
            logprobs=logprobs, num_reasoning_tokens=seq.num_reasoning_tokens,
            num_cache_created_tokens=state.samples[0].seq.num_pin_created_tokens or 0,
        )
