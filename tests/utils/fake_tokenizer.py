"""FakeTokenizer: a byte-level tokenizer with Qwen-style special tokens and chat template.

Ids 0-255 are bytes, 256+ the special tokens, 1000+ the whole-word tokens FakeEngine
emits. Deterministic and tiny, so token counts in tests are easy to predict.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
            "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
SPECIAL_IDS = {tok: 256 + i for i, tok in enumerate(SPECIALS)}
WORD_BASE = 1000
VOCAB_SIZE = 2048
_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


def _content(content: Any) -> str:
    """Text content as is; a VL-style part list with each image and video as its
    placeholder."""
    if not isinstance(content, list):
        return content or ""
    return "".join("<|vision_start|><|image_pad|><|vision_end|>" if p["type"] == "image"
                   else "<|vision_start|><|video_pad|><|vision_end|>" if p["type"] == "video"
                   else p["text"] for p in content)


class FakeTokenizer:
    """Implements the parts of ``dashserve.tokenizer.Tokenizer`` serving uses."""

    def __init__(self, words: Sequence[str] = ()) -> None:
        self.words = list(words)  # word token i has id WORD_BASE + i
        self.eos_token_id = SPECIAL_IDS["<|im_end|>"]
        self.stop_token_ids = (SPECIAL_IDS["<|im_end|>"], SPECIAL_IDS["<|endoftext|>"])
        self.vocab_size = VOCAB_SIZE
        self.template_calls: list[dict[str, Any]] = []

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _SPLIT.split(text):
            if piece in SPECIAL_IDS:
                ids.append(SPECIAL_IDS[piece])
            elif piece:
                ids.extend(piece.encode("utf-8"))
        return ids

    def escape_added(self, text: str) -> str:  # client text is rendered as it is
        return text

    def encode_prompt(self, text: str) -> list[int]:
        return self.encode(text)

    def token_bytes(self, token_id: int) -> bytes:
        if token_id < 256:
            return bytes([token_id])
        if token_id < 256 + len(SPECIALS):
            return SPECIALS[token_id - 256].encode()
        if WORD_BASE <= token_id < WORD_BASE + len(self.words):
            return self.words[token_id - WORD_BASE].encode()
        return b""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        data = b"".join(self.token_bytes(i) for i in ids
                        if not (skip_special_tokens and 256 <= i < WORD_BASE))
        return data.decode("utf-8", errors="replace")

    def token_str(self, token_id: int) -> str:
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def token_to_id(self, text: str) -> int | None:
        if text in SPECIAL_IDS:
            return SPECIAL_IDS[text]
        if text in self.words:
            return WORD_BASE + self.words.index(text)
        data = text.encode()
        return data[0] if len(data) == 1 else None

    def word_id(self, word: str) -> int:
        if word not in self.words:
            self.words.append(word)
        return WORD_BASE + self.words.index(word)

    def apply_chat_template(self, messages: Sequence[Any], tools: Sequence[Any] | None = None,
                            add_generation_prompt: bool = True, **kwargs: Any) -> str:
        self.template_calls.append({"messages": list(messages), "tools": tools,
                                    "add_generation_prompt": add_generation_prompt, **kwargs})
        parts = [f"<|im_start|>{m['role']}\n{_content(m.get('content'))}<|im_end|>\n"
                 for m in messages]
        if add_generation_prompt:
            parts.append("<|im_start|>assistant\n")
            if kwargs.get("enable_thinking") is False:
                parts.append("<think>\n\n</think>\n\n")
        return "".join(parts)
