"""Block manager: allocation, prefix reuse, copy-on-write forks, eviction order, no leaks."""

from __future__ import annotations

from dashserve.contracts.params import SamplingParams
from dashserve.engine.block_manager import BlockManager
from dashserve.engine.sequence import Sequence


def make_seq(tokens: list[int], seq_id: int = 0) -> Sequence:
    return Sequence(seq_id, f"r{seq_id}", 0, list(tokens), len(tokens), SamplingParams(), 10_000, 0.0)


def test_allocate_and_free_returns_every_block() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq(list(range(10)))
    assert bm.can_allocate(seq)
    bm.allocate(seq)
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 5
    bm.free(seq)
    assert bm.num_free_blocks == 8 and seq.block_table == []


def test_prefix_blocks_are_reused_after_they_are_full_and_computed() -> None:
    bm = BlockManager(num_blocks=16, block_size=4)
    first = make_seq(list(range(11)))
    bm.allocate(first)
    first.num_computed_tokens = 11
    bm.register_full_blocks(first)
    second = make_seq(list(range(9)) + [99, 98], seq_id=1)
    bm.allocate(second)
    # two full blocks (8 tokens) shared; the last token of a prompt is never served from cache
    assert second.block_table[:2] == first.block_table[:2]
    assert second.num_computed_tokens == 8
    assert bm.blocks[first.block_table[0]].ref_count == 2
    bm.free(first)
    bm.free(second)
    assert bm.num_free_blocks == 16


def test_whole_prompt_in_cache_still_computes_last_token() -> None:
    bm = BlockManager(num_blocks=16, block_size=4)
    a = make_seq(list(range(8)))
    bm.allocate(a)
    a.num_computed_tokens = 8
    bm.register_full_blocks(a)
    bm.free(a)
    b = make_seq(list(range(8)), seq_id=1)
    bm.allocate(b)
    assert b.num_computed_tokens == 4  # only the first block: token 7 must be computed


def test_freed_cached_blocks_are_evicted_last_and_revived() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a = make_seq([1, 2, 3, 4, 5])
    bm.allocate(a)
    a.num_computed_tokens = 5
    bm.register_full_blocks(a)
    bm.free(a)
    b = make_seq([1, 2, 3, 4, 7], seq_id=1)
    assert bm.can_allocate(b)
    bm.allocate(b)
    assert b.num_computed_tokens == 4
    bm.free(b)
    assert bm.num_free_blocks == 4


def test_fork_copies_partial_last_block() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    parent = make_seq(list(range(6)))
    bm.allocate(parent)
    parent.num_computed_tokens = 6
    child = make_seq(list(range(6)), seq_id=1)
    pair = bm.fork(parent, child)
    assert pair is not None and pair[0] == parent.block_table[-1]
    assert child.block_table[0] == parent.block_table[0]
    assert child.block_table[-1] == pair[1] != parent.block_table[-1]
    assert bm.blocks[parent.block_table[0]].ref_count == 2
    bm.free(parent)
    bm.free(child)
    assert bm.num_free_blocks == 8


def test_fork_on_block_boundary_shares_everything() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    parent = make_seq(list(range(8)))
    bm.allocate(parent)
    parent.num_computed_tokens = 8
    child = make_seq(list(range(8)), seq_id=1)
    assert bm.fork(parent, child) is None
    assert child.block_table == parent.block_table


def test_prefix_caching_can_be_disabled() -> None:
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    a = make_seq(list(range(9)))
    bm.allocate(a)
    a.num_computed_tokens = 9
    bm.register_full_blocks(a)
    b = make_seq(list(range(9)), seq_id=1)
    bm.allocate(b)
    assert b.num_computed_tokens == 0


def computed_seq(bm: BlockManager, tokens: list[int], seq_id: int = 0) -> Sequence:
    seq = make_seq(tokens, seq_id)
    bm.allocate(seq)
    seq.num_computed_tokens = len(tokens)
    bm.register_full_blocks(seq)
    return seq


def test_pinned_prefix_survives_eviction_pressure_until_it_expires() -> None:
    bm = BlockManager(num_blocks=6, block_size=4)
    first = computed_seq(bm, list(range(10)))
    assert bm.pin_prefix(first, 8, ttl_s=60.0, now=0.0) == 8  # two full blocks pinned
    bm.free(first)
    assert bm.num_free_blocks == 4  # the pinned two stay out of the free queue
    # an unrelated sequence takes every free block: the pinned prefix is not evicted
    other = computed_seq(bm, list(range(100, 116)), seq_id=1)
    bm.free(other)
    again = make_seq(list(range(10)), seq_id=2)
    bm.allocate(again)
    assert again.num_computed_tokens == 8
    assert bm.pin_prefix(again, 8, ttl_s=60.0, now=30.0) == 0  # renewed, not created
    bm.free(again)
    bm.expire_pins(now=80.0)  # renewed at 30 s: still pinned at 80 s
    assert bm.num_free_blocks == 4
    bm.expire_pins(now=91.0)
    assert bm.num_free_blocks == 6 and not bm.pins


def test_pins_give_way_before_a_sequence_would_not_fit() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    first = computed_seq(bm, list(range(9)))
    bm.pin_prefix(first, 8, ttl_s=300.0, now=0.0)
    bm.free(first)
    big = make_seq(list(range(200, 216)), seq_id=1)  # needs all four blocks
    assert bm.can_allocate(big)
    bm.allocate(big)
    assert not bm.pins
    bm.free(big)
    assert bm.num_free_blocks == 4


def test_digests_are_keyed_chained_and_salted() -> None:
    from dashserve.engine.block_manager import block_digest, root_digest

    root = root_digest("")
    a = block_digest(root, list(range(16)))
    assert len(a) == 16 and a == block_digest(root, list(range(16)))
    assert a != block_digest(root, [*range(15), 99])  # any token changes it
    assert block_digest(a, list(range(16))) != a  # chained on the parent
    assert block_digest(root_digest("ws:a"), list(range(16))) != a  # salted per partition
    assert root_digest("ws:a") != root_digest("ws:b")


def test_sequences_with_different_salts_never_share_blocks() -> None:
    bm = BlockManager(num_blocks=16, block_size=4)
    tokens = list(range(1, 14))
    first = Sequence(seq_id=1, request_id="a", index=0, token_ids=list(tokens),
                     num_prompt_tokens=len(tokens), params=SamplingParams(cache_salt="ws:a"),
                     max_total_tokens=64, arrival_time=0.0)
    bm.allocate(first)
    first.num_computed_tokens = len(tokens)
    bm.register_full_blocks(first)
    other = Sequence(seq_id=2, request_id="b", index=0, token_ids=list(tokens),
                     num_prompt_tokens=len(tokens), params=SamplingParams(cache_salt="ws:b"),
                     max_total_tokens=64, arrival_time=0.0)
    same = Sequence(seq_id=3, request_id="c", index=0, token_ids=list(tokens),
                    num_prompt_tokens=len(tokens), params=SamplingParams(cache_salt="ws:a"),
                    max_total_tokens=64, arrival_time=0.0)
    bm.allocate(other)
    bm.allocate(same)
    assert other.num_computed_tokens == 0
    assert same.num_computed_tokens == 12 and same.block_table[:3] == first.block_table[:3]
