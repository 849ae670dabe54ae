"""ASCII text encoded piece by piece, with the ids of recurring pieces kept.

A byte-level BPE tokenizer splits its input with one regular expression and encodes each
piece on its own, so the ids of a text are the ids of its pieces, one after the other. For
a tokenizer whose whole pipeline is known to be that (a ``Split`` with a regex, byte-level
mapping, BPE without dropout, at most NFC normalization), ``PieceEncoder`` splits ASCII text
with the same expression here and looks each piece up in a bounded table, asking the BPE
model only for pieces it has not seen. Words recur across prompts ("the", " because",
"\\n\\n"), so most are found there.

The gain is time and the memory a request touches: a short prompt takes about 6 µs here
against 30 µs through the library, whose pipeline reads large tables; on a server idle
between requests those have left the CPU caches, and the first encode after a 300 ms pause
took about 2 ms there against 0.4 ms here (``bench/idle_penalty.py``). ASCII only: there
NFC changes nothing and the two regex engines agree on every character class
(``tests/test_tokenizer_pieces.py`` holds the ids to the library's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import regex

from dashserve.tokenizer_build import bytes_to_unicode

if TYPE_CHECKING:
    from tokenizers import Tokenizer as Backend

KEPT_PIECE_CHARS = 32  # pieces up to this long have their ids kept ...
MAX_KEPT_PIECES = 1 << 16  # ... up to this many (the table starts over when full)
# the Unicode classes a split expression may use, and what they are within ASCII
_ASCII_CLASSES = {"L": "A-Za-z", "N": "0-9"}
# texts on which a narrowed expression must split as the original does
_PROBES = tuple(t for c in map(chr, range(128))
                for t in (c, c * 3, f"a{c}b", f" {c} 1", f"{c}'s\n\n  x"))


def split_pattern(spec: dict[str, Any]) -> str | None:
    """The split expression of a tokenizer.json whose pipeline is a regex split, byte-level
    mapping and plain BPE (see the module docstring); None for any other pipeline."""
    normalizer = spec.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        return None
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("dropout") not in (None, 0, 0.0):
        return None
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return None
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return None
    split, level = steps
    pattern = (split.get("pattern") or {}).get("Regex")
    if (split.get("type") != "Split" or not isinstance(pattern, str)
            or split.get("behavior") != "Isolated" or split.get("invert")):
        return None
    if (level.get("type") != "ByteLevel" or level.get("use_regex")
            or level.get("add_prefix_space")):
        return None
    return pattern


def ascii_pattern(pattern: str) -> str | None:
    """``pattern`` with ``\\p{L}`` and ``\\p{N}`` narrowed to ASCII, for the standard
    library's ``re``; None when it uses any other Unicode property."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            prop = re.match(r"\\[pP]\{(\w+)\}", pattern[i:])
            if prop is not None:
                narrowed = _ASCII_CLASSES.get(prop.group(1))
                if narrowed is None or prop.group(0)[1] == "P":
                    return None
                out.append(narrowed if in_class else f"[{narrowed}]")
                i += len(prop.group(0))
                continue
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            if pattern[i + 1:i + 2] == "^":
                out.append("[^")
                i += 2
                continue
        elif char == "]" and in_class and out[-1] not in ("[", "[^"):
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


def ascii_splitter(pattern: str) -> Callable[[str], list[str]]:
    """``findall`` of ``pattern`` for ASCII text. The standard library's ``re`` with the
    expression narrowed to ASCII reads far less memory than the ``regex`` module's Unicode
    tables; it is used when it splits every probe text exactly as the original does."""
    full = regex.compile(pattern).findall
    narrowed = ascii_pattern(pattern)
    if narrowed is None:
        return full
    try:
        fast = re.compile(narrowed, re.ASCII).findall
    except re.error:
        return full
    return fast if all(fast(t) == full(t) for t in _PROBES) else full


class PieceEncoder:
    """The ids of ASCII text, as the backend's BPE model gives them piece by piece."""

    def __init__(self, backend: Backend, pattern: str) -> None:
        self._model = backend.model
        self._split = ascii_splitter(pattern)
        self._to_level = str.maketrans({b: u for b, u in bytes_to_unicode().items() if b < 128})
        self._ids: dict[str, tuple[int, ...]] = {}

    @classmethod
    def of(cls, backend: Backend, spec: dict[str, Any] | None = None) -> PieceEncoder | None:
        """An encoder for ``backend`` (``spec``: its tokenizer.json, when already read), or
        None when its pipeline is not the known one."""
        pattern = split_pattern(spec if spec is not None else json.loads(backend.to_str()))
        return None if pattern is None else cls(backend, pattern)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, which must be ASCII."""
        ids: list[int] = []
        kept = self._ids
        for piece in self._split(text):
            piece_ids = kept.get(piece)
            if piece_ids is None:
                piece_ids = self._encode_new(piece)
            ids += piece_ids
        return ids

    def _encode_new(self, piece: str) -> tuple[int, ...]:
        piece_ids = tuple(t.id for t in self._model.tokenize(piece.translate(self._to_level)))
        if len(piece) <= KEPT_PIECE_CHARS:
            if len(self._ids) >= MAX_KEPT_PIECES:
                self._ids = {}
            self._ids[piece] = piece_ids
        return piece_ids
