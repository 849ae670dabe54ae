"""Continuous batching: which sequences run this step and how many tokens each computes.

Each step spends a token budget: first one token for every decoding sequence, then prompt
chunks of sequences still filling, then newly admitted waiting sequences (FCFS). When the KV
cache cannot hold the decodes, the most recently admitted sequence is preempted (its blocks
freed; it is recomputed later, mostly from the prefix cache).

After the forward pass the scheduler settles the step in ``update_from_output``: computed
tokens, full blocks registered in the prefix cache, explicit-cache pins. Samples forked from
a request's first sample join through ``add_fork``; ``finish`` ends a sequence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from dashserve.engine.block_manager import BlockManager
from dashserve.engine.sequence import Sequence, SequenceStatus


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_seqs: int = 64  # sequences running at once
    max_num_batched_tokens: int = 512  # tokens computed per step (prefill chunk budget)


@dataclass(slots=True)
class ScheduledChunk:
    """``num_tokens`` tokens of ``seq`` starting at ``seq.num_computed_tokens``."""

    seq: Sequence
    num_tokens: int

    @property
    def samples(self) -> bool:
        """Whether this chunk reaches the sequence's last token, so it samples a new one."""
        return self.seq.num_computed_tokens + self.num_tokens == self.seq.num_tokens


@dataclass(slots=True)
class SchedulerOutput:
    """One step's work. Decodes come first in the flat token batch, then prefill chunks."""

    decodes: list[ScheduledChunk] = field(default_factory=list)
    prefills: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def chunks(self) -> list[ScheduledChunk]:
        return self.decodes + self.prefills

    @property
    def is_empty(self) -> bool:
        return not self.decodes and not self.prefills


class Scheduler:
    """Owns the waiting and running sequences and their KV blocks (through the block manager).

    Called by the engine, once per step and in this order: ``schedule`` (what to compute),
    then, after the forward pass, ``update_from_output`` (what was computed); between
    steps ``add``/``add_fork`` bring sequences in and ``finish`` takes them out.
    """

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.blocks = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self, now: float) -> SchedulerOutput:
        """This step's chunks; pins past their lifetime (``now``, monotonic seconds) go first."""
        if self.blocks.pins:
            self.blocks.expire_pins(now)
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        budget = self._schedule_decodes(out, budget)
        budget = self._schedule_running_prefills(out, budget)
        self._admit_waiting(out, budget)
        return out

    def _schedule_decodes(self, out: SchedulerOutput, budget: int) -> int:
        decoding = [s for s in self.running if s.num_uncomputed == 1]
        while decoding and not self.blocks.can_append(decoding):
            victim = self.running[-1]
            self._preempt(victim)
            out.preempted.append(victim)
            if victim in decoding:
                decoding.remove(victim)
        for seq in decoding[:budget]:
            self.blocks.append_slots(seq)
            out.decodes.append(ScheduledChunk(seq, 1))
        return budget - len(out.decodes)

    def _schedule_running_prefills(self, out: SchedulerOutput, budget: int) -> int:
        for seq in self.running:
            if budget <= 0:
                break
            if seq.num_uncomputed > 1:
                n = min(seq.num_uncomputed, budget)
                out.prefills.append(ScheduledChunk(seq, n))
                budget -= n
        return budget

    def _admit_waiting(self, out: SchedulerOutput, budget: int) -> None:
        while self.waiting and budget > 0:
            seq = self.waiting[0]
            seats = 1 + seq.pending_forks
            if len(self.running) + seats > self.config.max_num_seqs:
                break
            if not self.blocks.can_allocate(seq, reserve=seq.pending_forks + len(self.running)):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq)
            if seq.num_output_tokens == 0 and seq.num_cached_tokens == 0:  # first admission
                seq.num_cached_tokens = seq.num_computed_tokens
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            n = min(seq.num_uncomputed, budget)
            out.prefills.append(ScheduledChunk(seq, n))
            budget -= n

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def update_from_output(self, out: SchedulerOutput, now: float) -> list[ScheduledChunk]:
        """Settle a computed step: advance each chunk's sequence, register its newly full
        blocks in the prefix cache and pin an explicit-cache prefix once it is computed.
        Returns the chunks that sample a token, in the logits' row order."""
        sampling: list[ScheduledChunk] = []
        for chunk in out.chunks:
            if chunk.samples:
                sampling.append(chunk)
            seq = chunk.seq
            seq.num_computed_tokens += chunk.num_tokens
            self.blocks.register_full_blocks(seq)
            if seq.params.pin_prefix_tokens and seq.num_pin_created_tokens is None:
                self._pin_prefix(seq, now)
        return sampling

    def _pin_prefix(self, seq: Sequence, now: float) -> None:
        """Pin the explicit-cache prefix once all of it (or the whole prompt) is computed."""
        want = min(seq.params.pin_prefix_tokens, seq.num_prompt_tokens)
        if seq.num_computed_tokens >= want:
            seq.num_pin_created_tokens = self.blocks.pin_prefix(
                seq, want, seq.params.pin_ttl_s, now
            )

    def add_fork(self, parent: Sequence, child: Sequence) -> tuple[int, int] | None:
        """Bring in a sample forked from ``parent`` once its prompt is computed: it shares the
        parent's blocks and runs at once, or, with no free block for the copy-on-write of a
        partial last block, waits to be recomputed (mostly from the prefix cache). Returns
        the (src, dst) block the runner must copy before the next step, if any."""
        needs_copy = parent.num_computed_tokens % self.blocks.block_size != 0
        if self.blocks.num_free_blocks < int(needs_copy):
            self.add(child)
            return None
        pair = self.blocks.fork(parent, child)
        self.add_running(child)
        return pair

    def finish(self, seq: Sequence, status: SequenceStatus) -> None:
        """Mark ``seq`` finished and free its blocks at once (running or waiting)."""
        seq.status = status
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free(seq)

    def add_running(self, seq: Sequence) -> None:
        """A forked sample joins the running set directly (its blocks are already shared)."""
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)
