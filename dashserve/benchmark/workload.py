"""Benchmark prompts: random vocabulary words making user messages of an exact token length.

Token lengths are exact under one dashserve tokenizer (the bundled Qwen3 tokenizer unless a
tokenizer directory is given); other servers may count a little differently, which is why the
benchmark reports the prompt tokens each server says it saw.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dashserve.tokenizer import Tokenizer

_WORD = re.compile(r"^ [a-z]{2,12}$")
_REPAIR_ROUNDS = 64


def load_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """The tokenizer in ``path`` (a directory with tokenizer.json), else the bundled Qwen3 one."""
    if path is None:
        from dashserve.tokenizer_build import ensure_cached

        path = ensure_cached()
    return Tokenizer.from_dir(path)


def _candidate_words(tokenizer: Tokenizer) -> list[str]:
    """Single-token words with a leading space: joined, each still counts as one token."""
    found = []
    for token_id in range(tokenizer.vocab_size):
        raw = tokenizer.token_bytes(token_id).replace("\u2581".encode(), b" ")
        text = raw.decode("utf-8", errors="replace")
        if _WORD.match(text):
            found.append(text)
    found = sorted(set(found))
    encoded = tokenizer.backend.encode_batch(found, add_special_tokens=False)
    words = [w for w, enc in zip(found, encoded, strict=True) if len(enc.ids) == 1]
    if len(words) < 100:
        raise ValueError("the tokenizer has too few plain single-token words to build prompts")
    return words


@dataclass(frozen=True)
class Workload:
    """What every request asks: prompt length, output length and an optional shared prefix."""

    prompt_tokens: int = 256
    output_tokens: int = 128
    shared_prefix_tokens: int = 0
    seed: int = 0


class PromptFactory:
    """Deterministic chat messages for request ``i``: distinct per request, same for a seed."""

    def __init__(self, tokenizer: Tokenizer, workload: Workload) -> None:
        if workload.prompt_tokens < 1 or workload.shared_prefix_tokens < 0:
            raise ValueError("prompt tokens must be >= 1 and shared prefix tokens >= 0")
        self.tokenizer = tokenizer
        self.workload = workload
        self.words = _candidate_words(tokenizer)
        system_rng = random.Random(f"{workload.seed}:system")
        self.system = (self.text(workload.shared_prefix_tokens, system_rng)
                       if workload.shared_prefix_tokens else None)

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def text(self, n_tokens: int, rng: random.Random) -> str:
        """Random words that encode to exactly ``n_tokens`` tokens."""
        words = [rng.choice(self.words) for _ in range(n_tokens)]
        for _ in range(_REPAIR_ROUNDS):  # only tokenizers that merge across words need this
            n = self.count("".join(words))
            if n == n_tokens:
                return "".join(words)
            if n > n_tokens:
                words.pop()
            else:
                words.append(rng.choice(self.words))
        raise ValueError(f"could not build a prompt of exactly {n_tokens} tokens")

    def messages(self, index: int, warmup: bool = False) -> list[dict[str, Any]]:
        """The messages of request ``index``; warm-up requests draw from their own series."""
        kind = "warmup" if warmup else "user"
        rng = random.Random(f"{self.workload.seed}:{kind}:{index}")
        user = {"role": "user", "content": self.text(self.workload.prompt_tokens, rng)}
        if self.system is None:
            return [user]
        return [{"role": "system", "content": self.system}, user]
