"""Rebuild the Qwen3 tokenizer files (tokenizer.json, tokenizer_config.json, vocab.json,
merges.txt) from the ``qwen.tiktoken`` rank file inside the ``dashscope`` package, cached once
per machine.

The rank file lists ``base64(token bytes) rank`` for the 151,643 byte-level BPE tokens; ranks equal
Qwen2/2.5/3 token ids. Merges are recovered exactly: running BPE on a token's bytes with only the
ranks below its own always ends in two parts, which form that token's merge. The 26 Qwen3 added
tokens follow at ids 151643..151668.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

BUILDER_VERSION = "1"
FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")

# The Qwen2/3 pre-tokenizer split: digits one at a time (\p{N}), unlike cl100k's \p{N}{1,3}.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (content, special) in id order starting at 151643.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True),
    ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
    ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
)
FIRST_ADDED_ID = 151643


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable unicode character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def tiktoken_path() -> Path:
    """The ``qwen.tiktoken`` file inside the installed dashscope package."""
    return Path(str(resources.files("dashscope") / "resources" / "qwen.tiktoken"))


def chat_template_text() -> str:
    path = resources.files("dashserve.model") / "templates" / "qwen3.jinja"
    text = path.read_text("utf-8")
    return text.rstrip("\n")


def load_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """BPE on ``token`` using only merges whose result ranks below ``max_rank``."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_i = max_rank, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best:
                best, best_i = r, i
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """One merge per multi-byte token, in rank order."""
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _bpe_parts(ranks, token, rank)
        if len(parts) != 2:
            raise ValueError(f"token of rank {rank} does not split into one merge: {parts!r}")
        merges.append((parts[0], parts[1]))
    return merges


def build_backend(
    ranks: dict[bytes, int],
) -> tuple[Tokenizer, dict[str, int], list[tuple[str, str]]]:
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    b2u = bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {to_str(tok): rank for tok, rank in ranks.items()}
    merges = [(to_str(a), to_str(b)) for a, b in recover_merges(ranks)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=False,
                               ignore_merges=False, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()  # byte-level decoding has no options
    for i, (content, special) in enumerate(ADDED_TOKENS):
        added = AddedToken(content, single_word=False, lstrip=False, rstrip=False,
                           normalized=False, special=special)
        n = tok.add_special_tokens([added]) if special else tok.add_tokens([added])
        if n != 1 or tok.token_to_id(content) != FIRST_ADDED_ID + i:
            raise ValueError(f"added token {content!r} did not get id {FIRST_ADDED_ID + i}")
    return tok, vocab, merges


def tokenizer_config() -> dict[str, Any]:
    decoder = {
        str(FIRST_ADDED_ID + i): {
            "content": content, "lstrip": False, "normalized": False,
            "rstrip": False, "single_word": False, "special": special,
        }
        for i, (content, special) in enumerate(ADDED_TOKENS)
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [c for c, s in ADDED_TOKENS if s and c != "<|endoftext|>"],
        "bos_token": None,
        "chat_template": chat_template_text(),
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def build_tokenizer_files(out_dir: Path, source: Path | None = None) -> None:
    """Build all tokenizer files into ``out_dir`` from scratch (about 2.5 s)."""
    started = time.monotonic()
    ranks = load_ranks(source or tiktoken_path())
    tok, vocab, merges = build_backend(ranks)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = tokenizer_config()
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with open(out_dir / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    log.info("built the Qwen3 tokenizer (%d merges) in %.2fs",
             len(merges), time.monotonic() - started)


def cache_dir() -> Path:
    """Where this machine keeps the built tokenizer for the installed rank file and builder."""
    root = os.environ.get("DASHSERVE_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "dashserve"
    h = hashlib.sha256(tiktoken_path().read_bytes())
    h.update(BUILDER_VERSION.encode())
    h.update(chat_template_text().encode("utf-8"))
    return base / f"tokenizer-{h.hexdigest()[:16]}"


def ensure_cached() -> Path:
    """The cache directory with all tokenizer files, building it once if needed."""
    target = cache_dir()
    if all((target / name).is_file() for name in FILES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)
    try:
        build_tokenizer_files(tmp)
        try:
            os.replace(tmp, target)  # atomic; loses harmlessly to a concurrent builder
        except OSError:
            if not all((target / name).is_file() for name in FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_tokenizer_files(out_dir: Path) -> None:
    """Write the Qwen3 tokenizer files into ``out_dir`` (copied from the per-machine cache)."""
    src = ensure_cached()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(src / name, out_dir / name)
