"""Paged KV blocks: reference counts, chained prefix hashes, a free queue in eviction order.

A block holds ``block_size`` consecutive tokens of one or more sequences (shared prefixes).
Once full, a block gets a digest chained from its predecessor's, so any later sequence with
the same token prefix can reuse it. Digests are keyed 128-bit BLAKE2b over the parent digest
and the block's tokens, rooted at the request's cache salt: collisions cannot be crafted
(the key is secret and per process), and sequences with different salts (workspaces) never
share a block. Freed blocks keep their digest and sit in the free queue, least recently used
first; allocating a fresh block evicts from the front.

Pins (explicit cache markers) hold one extra reference on a prefix's full blocks until they
expire, so those blocks cannot be evicted; under memory pressure the oldest pins give way
before any running sequence would be preempted.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from dashserve.engine.sequence import Sequence


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: bytes | None = None  # set once the block is full and its content is final


_DIGEST_KEY = os.urandom(32)  # secret per process: block digests cannot be precomputed


def block_digest(parent: bytes, token_ids: list[int], media: Iterable[str] = ()) -> bytes:
    """The digest of a full block: its parent's digest, its tokens and the content hashes
    of the media it holds placeholders of, keyed."""
    h = hashlib.blake2b(parent, digest_size=16, key=_DIGEST_KEY)
    h.update(array("q", token_ids).tobytes())
    for content_hash in media:
        h.update(b"\x00" + content_hash.encode())
    return h.digest()


def root_digest(salt: str) -> bytes:
    """The chain's root for a cache partition (the empty salt: the shared partition)."""
    return hashlib.blake2b(salt.encode("utf-8", "surrogatepass"), digest_size=16,
                           key=_DIGEST_KEY, person=b"dashserve-root").digest()


def blocks_for(num_tokens: int, block_size: int) -> int:
    return (num_tokens + block_size - 1) // block_size


class BlockManager:
    """Owns every KV block. Sequences hold ``block_table`` lists of block ids."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_queue: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.hash_to_block: dict[bytes, int] = {}
        self.num_cached_tokens_served = 0
        self.pins: OrderedDict[int, float] = OrderedDict()  # block id -> expiry, oldest first

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_queue)

    def _prefix_hashes(self, seq: Sequence) -> list[bytes]:
        """Chained digests of the full blocks before the last token (which must be computed)."""
        if not self.enable_prefix_caching:
            return []
        hashes: list[bytes] = []
        parent = root_digest(seq.params.cache_salt)
        bs = self.block_size
        for i in range((seq.num_tokens - 1) // bs):
            parent = self._block_hash(parent, seq, i)
            hashes.append(parent)
        return hashes

    def _block_hash(self, parent: bytes, seq: Sequence, i: int) -> bytes:
        """Block ``i``'s digest: its tokens chained to its predecessor's digest, plus the
        content hash of every image or video whose placeholder tokens the block overlaps (the
        same placeholder ids stand for different pixels)."""
        bs = self.block_size
        start, end = i * bs, (i + 1) * bs
        media = [it.content_hash for it in seq.mm_inputs
                 if it.offset < end and it.offset + it.length > start]
        return block_digest(parent, seq.token_ids[start:end], media)

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        hits: list[int] = []
        for h in self._prefix_hashes(seq):
            block_id = self.hash_to_block.get(h)
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def can_allocate(self, seq: Sequence, reserve: int = 0) -> bool:
        """Whether the whole current token list fits, counting prefix-cache hits."""
        for _ in range(2):  # a second look after pins gave way
            hits = self._cached_prefix(seq)
            revived = sum(1 for b in hits if self.blocks[b].ref_count == 0)
            needed = blocks_for(seq.num_tokens, self.block_size) - len(hits) + revived + reserve
            if needed <= self.num_free_blocks or not self._release_pins_for(needed):
                break
        return needed <= self.num_free_blocks

    def allocate(self, seq: Sequence) -> None:
        """Give ``seq`` blocks for all its tokens; reuse cached prefix blocks."""
        assert not seq.block_table
        hits = self._cached_prefix(seq)
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free_queue[block_id]
            block.ref_count += 1
        seq.block_table = list(hits)
        seq.num_computed_tokens = len(hits) * self.block_size
        self.num_cached_tokens_served += seq.num_computed_tokens
        for _ in range(blocks_for(seq.num_tokens, self.block_size) - len(hits)):
            seq.block_table.append(self._take_fresh())

    def _take_fresh(self) -> int:
        block_id, _ = self.free_queue.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None:
            if self.hash_to_block.get(block.hash) == block_id:
                del self.hash_to_block[block.hash]
            block.hash = None
        block.ref_count = 1
        return block_id

    def can_append(self, seqs: list[Sequence]) -> bool:
        needed = sum(self._blocks_missing(s) for s in seqs)
        if needed > self.num_free_blocks:
            self._release_pins_for(needed)
        return needed <= self.num_free_blocks

    def _blocks_missing(self, seq: Sequence) -> int:
        return max(0, blocks_for(seq.num_tokens, self.block_size) - len(seq.block_table))

    def append_slots(self, seq: Sequence) -> None:
        """Make room for every token of ``seq`` (called before a decode step)."""
        for _ in range(self._blocks_missing(seq)):
            seq.block_table.append(self._take_fresh())

    def register_full_blocks(self, seq: Sequence) -> None:
        """Hash the blocks whose tokens are now all computed, so others can reuse them."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        parent = root_digest(seq.params.cache_salt)
        for i in range(seq.num_computed_tokens // bs):
            block = self.blocks[seq.block_table[i]]
            if block.hash is None:
                block.hash = self._block_hash(parent, seq, i)
                self.hash_to_block.setdefault(block.hash, block.block_id)
            parent = block.hash

    def fork(self, parent: Sequence, child: Sequence) -> tuple[int, int] | None:
        """Share ``parent``'s blocks with ``child``. Returns (src, dst) when the partially
        filled last block had to be copied (copy-on-write), else None."""
        child.block_table = list(parent.block_table)
        for block_id in child.block_table:
            self.blocks[block_id].ref_count += 1
        child.num_computed_tokens = parent.num_computed_tokens
        if parent.num_computed_tokens % self.block_size == 0:
            return None
        src = child.block_table[-1]
        self.blocks[src].ref_count -= 1
        dst = self._take_fresh()
        child.block_table[-1] = dst
        return src, dst

    # ----- pins (explicit cache) -------------------------------------------------------------

    def pin_prefix(self, seq: Sequence, num_tokens: int, ttl_s: float, now: float) -> int:
        """Pin the computed full blocks of ``seq``'s first ``num_tokens`` tokens until
        ``now + ttl_s``; a block already pinned gets its lifetime renewed. Returns how many
        tokens were newly pinned (0 when the whole prefix was pinned before)."""
        if not self.enable_prefix_caching:
            return 0
        count = min(num_tokens, seq.num_computed_tokens) // self.block_size
        created = 0
        for block_id in seq.block_table[:count]:
            block = self.blocks[block_id]
            if block.hash is None:  # not registered (cannot be reused): nothing to keep
                break
            if block_id in self.pins:
                self.pins.move_to_end(block_id)
            else:
                block.ref_count += 1
                created += self.block_size
            self.pins[block_id] = now + ttl_s
        return created

    def expire_pins(self, now: float) -> None:
        """Drop the pins whose lifetime is over (their blocks stay cached until evicted)."""
        while self.pins:
            block_id, expires = next(iter(self.pins.items()))
            if expires > now:
                break
            self._unpin_oldest()

    def _release_pins_for(self, needed: int) -> bool:
        """Drop the oldest pins until ``needed`` blocks are free; True if any pin went."""
        released = False
        while self.pins and self.num_free_blocks < needed:
            self._unpin_oldest()
            released = True
        return released

    def _unpin_oldest(self) -> None:
        block_id, _ = self.pins.popitem(last=False)
        block = self.blocks[block_id]
        block.ref_count -= 1
        if block.ref_count == 0:
            self.free_queue[block_id] = None

    def free(self, seq: Sequence) -> None:
        """Release ``seq``'s blocks; the tail goes to the front of the eviction order."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0, "block freed twice"
            if block.ref_count == 0:
                self.free_queue[block_id] = None
                if block.hash is None:  # nothing to reuse: evict it first
                    self.free_queue.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.num_computed_tokens = 0
