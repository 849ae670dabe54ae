"""Grammar-constrained decoding: compile output specs with llguidance, mask logits per step.

``GrammarCompiler`` turns a ``StructuredOutputSpec`` (a JSON schema, "any JSON object", or a
Lark grammar in llguidance syntax) into a ``CompiledGrammar``, cached by the hash of the
compiled grammar text. Every sample gets its own ``GrammarMatcher`` (a cheap copy of the
cached one). Each step the engine calls ``apply_masks`` on the constrained rows of its logits
(disallowed ids become -inf; one off-GIL batch fill for all rows), samples, then feeds the
chosen id to ``GrammarMatcher.accept_token``. When the grammar is complete the mask allows
only the end-of-sequence id (``<|im_end|>``).

JSON is generated with fixed separators (``", "`` between items, ``": "`` after keys) and
no other whitespace anywhere: a free-whitespace grammar lets a random or confused model
emit blanks forever. The JSON schema is enforced whether or not the request said
``strict`` (non-strict requests get the stronger guarantee). Ids past the tokenizer (the
embedding padding) are never allowed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import llguidance
import numpy as np
import torch

from dashserve.contracts.params import StructuredOutputSpec
from dashserve.errors import InvalidRequest

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

log = logging.getLogger(__name__)

JSON_ITEM_SEPARATOR = ", "
JSON_KEY_SEPARATOR = ": "
# llguidance JSON options forced onto every schema (the user's own "x-guidance" is dropped).
JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": JSON_ITEM_SEPARATOR,
    "key_separator": JSON_KEY_SEPARATOR,
}
DEFAULT_CACHE_SIZE = 128
_MAX_ERROR_CHARS = 400


@dataclass(frozen=True, slots=True, eq=False)
class CompiledGrammar:
    """A validated grammar. ``key`` is the sha256 of the llguidance grammar text; ``template``
    is a fresh matcher that per-sample matchers are copied from (never advance it)."""

    key: str
    kind: str  # "json_schema" | "json_object" | "grammar"
    grammar: str
    template: llguidance.LLMatcher


class _TokenizerAdapter:
    """What ``llguidance.TokenizerWrapper`` reads: per-id bytes, eos/bos, control ids and an
    encode callable (bytes in, ids out). Only ``<|...|>`` control tokens are special to the
    grammar; tags such as ``<tool_call>`` or ``<think>`` are ordinary text there."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        table = list(tokenizer.id_to_bytes)
        if len(table) > vocab_size:
            raise ValueError(f"tokenizer has {len(table)} ids but the model only {vocab_size}")
        self.tokens: list[bytes] = table + [b""] * (vocab_size - len(table))
        self.eos_token_id: int = tokenizer.eos_token_id
        self.bos_token_id: int | None = getattr(tokenizer, "bos_token_id", None)
        self.special_token_ids: list[int] = sorted(
            i for i in tokenizer.special_ids
            if i < vocab_size and self.tokens[i].startswith(b"<|") and self.tokens[i].endswith(b"|>")
        )
        self._encode = tokenizer.encode

    def __call__(self, data: bytes) -> list[int]:
        return list(self._encode(data.decode("utf-8", errors="replace")))


def build_ll_tokenizer(tokenizer: Any, vocab_size: int) -> llguidance.LLTokenizer:
    """An llguidance tokenizer of exactly ``vocab_size`` ids (about 0.5 s for Qwen: build once).
    ``tokenizer`` is a ``dashserve.tokenizer.Tokenizer`` (or anything with ``id_to_bytes``,
    ``special_ids``, ``eos_token_id`` and ``encode``), or an ``llguidance.LLTokenizer``."""
    if isinstance(tokenizer, llguidance.LLTokenizer):
        if tokenizer.vocab_size != vocab_size:
            raise ValueError(f"llguidance tokenizer has {tokenizer.vocab_size} ids, not {vocab_size}")
        return tokenizer
    wrapper = llguidance.TokenizerWrapper(_TokenizerAdapter(tokenizer, vocab_size))
    return llguidance.LLTokenizer(wrapper, n_vocab=vocab_size)


def grammar_source(spec: StructuredOutputSpec) -> tuple[str, str, str]:
    """(kind, llguidance grammar text, wire parameter to blame on errors) for ``spec``."""
    chosen = (spec.json_schema is not None) + bool(spec.json_object) + (spec.grammar is not None)
    if chosen != 1:
        raise InvalidRequest("exactly one structured-output kind must be set",
                             param="response_format")
    if spec.grammar is not None:
        return "grammar", llguidance.LLMatcher.grammar_from_lark(spec.grammar), "tools"
    if spec.json_object:
        schema: Any = {"type": "object"}
    else:
        schema = spec.json_schema
        if not isinstance(schema, dict):
            raise InvalidRequest("json_schema.schema must be a JSON object",
                                 param="response_format")
        schema = {k: v for k, v in schema.items() if k != "x-guidance"}
    kind = "json_object" if spec.json_object else "json_schema"
    try:
        text = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"invalid JSON schema: {exc}", param="response_format") from exc
    return kind, text, "response_format"


class GrammarCompiler:
    """Builds the llguidance tokenizer once; compiles specs (LRU-cached) and makes matchers.
    Thread-safe for ``compile``; matchers belong to the thread that steps them.
    ``num_threads``: mask-fill threads for a batch (default half the cores, at most 8; with
    one, masks are filled in the calling thread, which measured faster on 2 cores)."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, *, cache_size: int = DEFAULT_CACHE_SIZE,
        num_threads: int | None = None,
    ) -> None:
        self.vocab_size = vocab_size
        self.ll_tokenizer = build_ll_tokenizer(tokenizer, vocab_size)
        self.eos_token_id: int = self.ll_tokenizer.eos_token
        if num_threads is None:  # half the cores (the rest run torch), at most 8
            num_threads = max(1, min(8, (os.cpu_count() or 1) // 2))
        self.num_threads = num_threads
        # one worker thread is slower than filling in the caller (measured): no executor then
        self.executor = llguidance.LLExecutor(num_threads) if num_threads > 1 else None
        self.cache_size = cache_size
        self.limits = llguidance.LLParserLimits(verbose_errors=False)
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def compile(self, spec: StructuredOutputSpec) -> CompiledGrammar:
        """Validate and compile; raises ``InvalidParameter`` naming what llguidance rejects."""
        kind, text, param = grammar_source(spec)
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return cached
        template = llguidance.LLMatcher(self.ll_tokenizer, text, log_level=0, limits=self.limits)
        if template.is_error():
            raise InvalidRequest(_error_message(kind, template.get_error()), param=param)
        for warning in template.get_grammar_warnings():
            log.debug("grammar warning (%s): %s", kind, warning)
        compiled = CompiledGrammar(key, kind, text, template)
        with self._lock:
            self.misses += 1
            self._cache[key] = compiled
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return compiled

    def matcher(self, compiled: CompiledGrammar) -> GrammarMatcher:
        """A fresh matcher at the start of ``compiled`` (a copy: about 15 µs)."""
        return GrammarMatcher(compiled.template.deep_copy(), self)

    def __len__(self) -> int:
        return len(self._cache)


def _error_message(kind: str, error: str) -> str:
    what = {"json_schema": "response_format.json_schema.schema", "json_object": "response_format",
            "grammar": "the tool's parameters schema"}[kind]
    detail = " ".join(error.split())
    if len(detail) > _MAX_ERROR_CHARS:
        detail = detail[:_MAX_ERROR_CHARS] + "..."
    return f"{what} cannot be enforced: {detail}"


class GrammarMatcher:
    """The grammar state of one sample. ``accept_token`` never corrupts the state: a token the
    grammar cannot take (e.g. a forced ``\\n\\n`` after ``</think>``) is refused and counted."""

    __slots__ = ("_m", "_compiler", "num_accepted", "num_rejected")

    def __init__(self, matcher: llguidance.LLMatcher, compiler: GrammarCompiler) -> None:
        self._m = matcher
        self._compiler = compiler
        self.num_accepted = 0
        self.num_rejected = 0

    @property
    def vocab_size(self) -> int:
        return self._compiler.vocab_size

    @property
    def eos_token_id(self) -> int:
        return self._compiler.eos_token_id

    def accept_token(self, token_id: int) -> bool:
        """Advance by ``token_id``; False (state unchanged) when the grammar does not allow it."""
        m = self._m
        if m.is_stopped():
            ok = token_id == self.eos_token_id
        elif m.validate_tokens([token_id]) == 1:
            ok = m.consume_token(token_id)
        else:
            ok = False
        if ok:
            self.num_accepted += 1
        else:
            self.num_rejected += 1
            log.debug("grammar refused token %d", token_id)
        return ok

    def is_terminated(self) -> bool:
        """The grammar is complete (or failed): nothing but end-of-sequence may follow."""
        return self._m.is_stopped()

    def is_accepting(self) -> bool:
        """The output so far is a complete match (end-of-sequence is allowed now)."""
        return self._m.is_accepting()

    @property
    def error(self) -> str:
        return self._m.get_error()

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Write this step's allowed ids into ``bitmask[row]`` (int32, CPU, one bit per id)."""
        _check_bitmask(bitmask, self.vocab_size)
        target = bitmask[row]
        self._m.unsafe_compute_mask_ptr(target.data_ptr(), target.numel() * 4)


def bitmask_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def _check_bitmask(bitmask: torch.Tensor, vocab_size: int) -> None:
    if bitmask.dtype != torch.int32 or bitmask.device.type != "cpu" or not bitmask.is_contiguous():
        raise ValueError("bitmask must be a contiguous int32 CPU tensor")
    if bitmask.dim() != 2 or bitmask.shape[1] != bitmask_words(vocab_size):
        raise ValueError(f"bitmask must be [rows, {bitmask_words(vocab_size)}]")


def fill_bitmasks(matchers: Sequence[GrammarMatcher], bitmask: torch.Tensor) -> None:
    """Fill ``bitmask[i]`` for ``matchers[i]``: one off-GIL parallel call when the compiler has
    an executor (``num_threads`` > 1), else row by row (each call also drops the GIL)."""
    if not matchers:
        return
    compiler = matchers[0]._compiler
    _check_bitmask(bitmask, compiler.vocab_size)
    executor = compiler.executor
    if executor is None or len(matchers) == 1 or any(m._compiler is not compiler for m in matchers):
        for i, m in enumerate(matchers):
            m.fill_bitmask(bitmask, i)
        return
    pairs = [(m._m, i) for i, m in enumerate(matchers)]
    executor.unsafe_compute_mask_ptr(
        pairs, bitmask.data_ptr(), bitmask.shape[1] * 4, bitmask.shape[0]
    )


def disallowed_from_bitmask(bitmask: torch.Tensor, vocab_size: int) -> np.ndarray:
    """Bool [rows, vocab_size] numpy array: True where the bit is 0 (id not allowed)."""
    packed = np.invert(bitmask.numpy().view(np.uint8))  # little-endian words: id order = bit order
    return np.unpackbits(packed, axis=1, count=vocab_size, bitorder="little").view(np.bool_)


# -inf as the raw bits of each float type, for masking CPU logits through numpy views.
_NEG_INF_BITS: dict[torch.dtype, tuple[torch.dtype, Any]] = {
    torch.float32: (torch.float32, np.float32(-np.inf)),
    torch.bfloat16: (torch.int16, np.int16(-128)),  # 0xFF80
    torch.float16: (torch.int16, np.int16(-1024)),  # 0xFC00
}


def apply_masks(logits: torch.Tensor, rows: Iterable[int], matchers: Sequence[GrammarMatcher]) -> None:
    """In place on ``logits`` [B, V] (float32/bf16/fp16 on CPU, any float on GPU): for each
    listed row, set the ids its matcher does not allow (and every id past the grammar's
    vocabulary) to -inf. Unlisted rows are untouched; no rows costs nothing."""
    rows = list(rows)
    if not rows:
        return
    if len(rows) != len(matchers):
        raise ValueError("rows and matchers must have the same length")
    vocab = matchers[0].vocab_size
    bitmask = torch.empty((len(rows), bitmask_words(vocab)), dtype=torch.int32)
    fill_bitmasks(matchers, bitmask)
    width = min(vocab, logits.shape[1])
    disallowed = disallowed_from_bitmask(bitmask, width)
    if logits.device.type == "cpu" and logits.dtype in _NEG_INF_BITS:
        # numpy writes one row at a time without torch's thread-pool overhead (~0.1 ms a row)
        view_dtype, neg_inf = _NEG_INF_BITS[logits.dtype]
        array = logits.view(view_dtype).numpy()
        for i, row in enumerate(rows):
            np.copyto(array[row, :width], neg_inf, where=disallowed[i])
            array[row, width:] = neg_inf
        return
    mask = torch.from_numpy(disallowed).to(logits.device, non_blocking=True)
    index = torch.tensor(rows, device=logits.device)
    logits[index, :width] = logits[index, :width].masked_fill_(mask, float("-inf"))
    logits[index, width:] = float("-inf")
