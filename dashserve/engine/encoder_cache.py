"""The vision encoder's outputs by content hash, least recently used evicted first."""

from __future__ import annotations

from collections import OrderedDict

import torch

Encoded = tuple[torch.Tensor, list[torch.Tensor]]  # merged rows, DeepStack rows per layer


class EncoderCache:
    """Keeps at most ``max_tokens`` rows of encoder output (placeholder tokens), so a repeated
    image, or the next chunk of an image split by chunked prefill, is not encoded again."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.entries: OrderedDict[str, Encoded] = OrderedDict()
        self.num_tokens = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Encoded | None:
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return entry

    def put(self, key: str, value: Encoded) -> None:
        if key in self.entries:
            return
        rows = value[0].shape[0]
        while self.entries and self.num_tokens + rows > self.max_tokens:
            _, old = self.entries.popitem(last=False)
            self.num_tokens -= old[0].shape[0]
        if rows <= self.max_tokens:
            self.entries[key] = value
            self.num_tokens += rows
