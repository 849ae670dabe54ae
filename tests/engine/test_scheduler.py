"""The scheduler on its own, no model: order, token budget, chunked prefill, preemption, pins.

Each step here does what the engine does around a forward pass: ``schedule``, then
``update_from_output``, then one made-up token appended to every sequence that sampled.
"""

from __future__ import annotations

from dashserve.contracts.params import SamplingParams
from dashserve.engine.block_manager import BlockManager
from dashserve.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from dashserve.engine.sequence import Sequence, SequenceStatus

PARAMS = SamplingParams(max_tokens=64)


def make_seq(seq_id: int, num_prompt: int, params: SamplingParams = PARAMS,
             prompt: list[int] | None = None, pending_forks: int = 0) -> Sequence:
    tokens = prompt if prompt is not None else [1000 * (seq_id + 1) + i for i in range(num_prompt)]
    return Sequence(seq_id, f"r{seq_id}", 0, list(tokens), len(tokens), params, 10_000, 0.0,
                    pending_forks=pending_forks)


def make_scheduler(num_blocks: int = 64, block_size: int = 4, max_num_seqs: int = 8,
                   budget: int = 64) -> Scheduler:
    return Scheduler(SchedulerConfig(max_num_seqs, budget), BlockManager(num_blocks, block_size))


def step(sched: Scheduler, now: float = 0.0) -> tuple[SchedulerOutput, list[Sequence]]:
    """One step; returns the schedule and the sequences that sampled (a token appended)."""
    out = sched.schedule(now)
    sampled = [c.seq for c in sched.update_from_output(out, now)]
    for seq in sampled:
        seq.token_ids.append(7)
    return out, sampled


def plan(out: SchedulerOutput) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(seq_id, num_tokens) of the decodes and of the prefill chunks."""
    return ([(c.seq.seq_id, c.num_tokens) for c in out.decodes],
            [(c.seq.seq_id, c.num_tokens) for c in out.prefills])


def test_first_come_first_served_and_decodes_before_prefills() -> None:
    sched = make_scheduler()
    a, b = make_seq(0, 10), make_seq(1, 6)
    sched.add(a)
    sched.add(b)
    out, sampled = step(sched)
    assert plan(out) == ([], [(0, 10), (1, 6)])
    assert sampled == [a, b]
    assert a.status == b.status == SequenceStatus.RUNNING
    c = make_seq(2, 5)
    sched.add(c)
    out, sampled = step(sched)
    assert plan(out) == ([(0, 1), (1, 1)], [(2, 5)])  # decodes first, then the newcomer
    assert sampled == [a, b, c]
    assert a.num_computed_tokens == 11 and a.num_tokens == 12


def test_token_budget_splits_a_long_prompt_into_chunks() -> None:
    sched = make_scheduler(budget=16)
    long, short = make_seq(0, 40), make_seq(1, 10)
    sched.add(long)
    sched.add(short)
    plans, sampled_per_step = [], []
    for _ in range(4):
        out, sampled = step(sched)
        plans.append(plan(out))
        sampled_per_step.append([s.seq_id for s in sampled])
        assert sum(c.num_tokens for c in out.chunks) <= 16
    assert plans == [
        ([], [(0, 16)]),
        ([], [(0, 16)]),
        ([], [(0, 8), (1, 8)]),  # the rest of the long prompt, then a chunk of the next
        ([(0, 1)], [(1, 2)]),  # the long one decodes while the short one finishes its prompt
    ]
    # only the chunk that reaches a sequence's last token samples
    assert sampled_per_step == [[], [], [0], [0, 1]]
    assert long.num_computed_tokens == 41 and short.num_computed_tokens == 10


def test_running_seats_are_limited_and_freed_by_finish() -> None:
    sched = make_scheduler(max_num_seqs=2)
    seqs = [make_seq(i, 4) for i in range(3)]
    for seq in seqs:
        sched.add(seq)
    out, _ = step(sched)
    assert plan(out)[1] == [(0, 4), (1, 4)] and list(sched.waiting) == [seqs[2]]
    free_before = sched.blocks.num_free_blocks
    sched.finish(seqs[0], SequenceStatus.FINISHED_STOPPED)
    assert seqs[0].is_finished and seqs[0].block_table == []
    assert sched.blocks.num_free_blocks > free_before
    out, _ = step(sched)
    assert plan(out) == ([(1, 1)], [(2, 4)])
    for seq in seqs[1:]:
        sched.finish(seq, SequenceStatus.FINISHED_LENGTH)
    assert not sched.has_work()
    assert sched.blocks.num_free_blocks == sched.blocks.num_blocks


def test_preemption_when_blocks_run_out_frees_the_newest_and_recomputes_it() -> None:
    # 6 blocks of 4 tokens; two sequences of 8 prompt tokens hold 2 blocks each, and each
    # needs a third block once its 9th token is to be computed
    sched = make_scheduler(num_blocks=6, block_size=4)
    old, new = make_seq(0, 8), make_seq(1, 8)
    sched.add(old)
    sched.add(new)
    step(sched)  # both prompts computed, a token sampled each: 9 tokens, 3 blocks needed
    assert sched.blocks.num_free_blocks == 2
    out, _ = step(sched)  # both decodes fit: 2 new blocks
    assert plan(out)[0] == [(0, 1), (1, 1)] and sched.blocks.num_free_blocks == 0
    for _ in range(3):  # 10 -> 12 tokens: still 3 blocks each
        step(sched)
    assert old.num_tokens == new.num_tokens == 13
    out, _ = step(sched)  # the 13th token needs a fourth block each: the newest gives way
    assert out.preempted == [new] and sched.num_preemptions == 1
    assert new.status == SequenceStatus.WAITING and new.block_table == []
    assert new.num_computed_tokens == 0 and list(sched.waiting) == [new]
    assert plan(out) == ([(0, 1)], [])
    while old.num_tokens < 17:  # the survivor decodes on
        step(sched)
    sched.finish(old, SequenceStatus.FINISHED_LENGTH)
    # readmitted: its first two blocks are still in the prefix cache (the third went to the
    # survivor), the rest of its prompt and output is recomputed in one chunk
    out, sampled = step(sched)
    assert plan(out) == ([], [(1, 5)]) and sampled == [new]
    assert new.num_output_tokens == 6


def test_forked_samples_share_blocks_and_copy_a_partial_last_block() -> None:
    sched = make_scheduler(num_blocks=16, block_size=4)
    parent = make_seq(0, 6, pending_forks=1)
    sched.add(parent)
    step(sched)
    child = make_seq(5, 0, prompt=list(parent.token_ids))
    child.num_prompt_tokens = parent.num_prompt_tokens
    pair = sched.add_fork(parent, child)
    assert child.status == SequenceStatus.RUNNING and child in sched.running
    assert child.block_table[0] == parent.block_table[0]  # the full block is shared
    assert pair == (parent.block_table[1], child.block_table[1])  # the partial one copied
    assert child.num_computed_tokens == 6
    for seq in (parent, child):
        sched.finish(seq, SequenceStatus.FINISHED_STOPPED)
    assert sched.blocks.num_free_blocks == sched.blocks.num_blocks


def test_a_fork_with_no_block_for_its_copy_waits_to_be_recomputed() -> None:
    sched = make_scheduler(num_blocks=2, block_size=4)
    parent = make_seq(0, 6)
    sched.add(parent)
    step(sched)
    assert sched.blocks.num_free_blocks == 0
    child = make_seq(5, 0, prompt=list(parent.token_ids))
    assert sched.add_fork(parent, child) is None
    assert list(sched.waiting) == [child] and child.block_table == []


def test_prefix_blocks_registered_after_the_step_serve_the_next_prompt() -> None:
    sched = make_scheduler(block_size=4)
    shared = list(range(500, 512))
    first = make_seq(0, 0, prompt=shared + [1, 2])
    sched.add(first)
    step(sched)
    second = make_seq(1, 0, prompt=shared + [3])
    sched.add(second)
    out, _ = step(sched)
    assert plan(out)[1] == [(1, 1)]  # 12 tokens in three cached blocks: one left to compute
    assert second.num_cached_tokens == 12


def test_pins_are_made_once_the_prefix_is_computed_and_expire() -> None:
    sched = make_scheduler(budget=8, block_size=4)
    pinned = SamplingParams(max_tokens=4, pin_prefix_tokens=12, pin_ttl_s=10.0)
    seq = make_seq(0, 20, params=pinned)
    sched.add(seq)
    step(sched, now=100.0)  # 8 of 12 prefix tokens computed: no pin yet
    assert seq.num_pin_created_tokens is None and not sched.blocks.pins
    step(sched, now=101.0)
    assert seq.num_pin_created_tokens == 12 and len(sched.blocks.pins) == 3
    sched.finish(seq, SequenceStatus.FINISHED_STOPPED)
    pinned_blocks = sched.blocks.num_blocks - sched.blocks.num_free_blocks
    assert pinned_blocks == 3  # held after the request ended
    again = make_seq(1, 0, params=pinned, prompt=seq.token_ids[:20])
    sched.add(again)
    step(sched, now=105.0)  # the same prefix: pins renewed, none created
    assert again.num_cached_tokens == 16 and again.num_pin_created_tokens == 0
    sched.finish(again, SequenceStatus.FINISHED_STOPPED)
    sched.schedule(now=112.0)  # renewed at 105: still held
    assert len(sched.blocks.pins) == 3
    sched.schedule(now=115.5)
    assert not sched.blocks.pins
    assert sched.blocks.num_free_blocks == sched.blocks.num_blocks
