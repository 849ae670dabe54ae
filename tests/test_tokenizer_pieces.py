"""ASCII text encoded piece by piece gives exactly the tokenizer library's ids."""

from __future__ import annotations

import json
import random

import pytest
import regex

import dashserve.tokenizer_pieces as pieces_mod
from dashserve.tokenizer import Tokenizer
from dashserve.tokenizer_build import QWEN_PATTERN
from dashserve.tokenizer_pieces import PieceEncoder, split_pattern

# characters weighted toward what the split expression treats specially
WHITESPACE = " \t\n\r\x0b\x0c"
CONTROL = "".join(map(chr, range(0x20))) + "\x7f"
ALPHABET = (WHITESPACE * 6 + CONTROL + "0123456789" * 2 + "'" * 8 + "sStTdDmMlLrReEvV"
            + "abcxyzABCXYZ" + "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~")
TEXTS = [
    "Explain in one paragraph why the sky is blue.",
    "def f(x):\n\treturn x ** 2  # squared\r\n\r\n\n",
    '{"a": [1, 2, 3.25e-7], "b": null}\n',
    "I'LL say it's 12345 o'clock, they'd've known   \n\n  ",
    "   leading and trailing   ",
    "",
    "x" * 100 + " " + "y" * 40,
]


def library_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.prepare_plain().encode(text, add_special_tokens=False).ids


def test_the_qwen_pipeline_is_recognised(tokenizer: Tokenizer) -> None:
    spec = json.loads(tokenizer.backend.to_str())
    assert split_pattern(spec) is not None
    tokenizer.prepare_plain()
    assert tokenizer._pieces is not None


@pytest.mark.parametrize("change", [
    {"normalizer": {"type": "Lowercase"}},
    {"model_dropout": 0.1},
    {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}},
    {"split_behavior": "Removed"},
    {"level_regex": True},
])
def test_other_pipelines_are_left_to_the_library(tokenizer: Tokenizer, change: dict) -> None:
    spec = json.loads(tokenizer.backend.to_str())
    if "normalizer" in change:
        spec["normalizer"] = change["normalizer"]
    if "model_dropout" in change:
        spec["model"]["dropout"] = change["model_dropout"]
    if "pre_tokenizer" in change:
        spec["pre_tokenizer"] = change["pre_tokenizer"]
    if "split_behavior" in change:
        spec["pre_tokenizer"]["pretokenizers"][0]["behavior"] = change["split_behavior"]
    if "level_regex" in change:
        spec["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = True
    assert split_pattern(spec) is None


@pytest.mark.parametrize("text", TEXTS)
def test_known_texts(tokenizer: Tokenizer, text: str) -> None:
    assert tokenizer.encode_plain(text) == library_ids(tokenizer, text)


def test_random_ascii_texts_match_the_library(tokenizer: Tokenizer) -> None:
    rng = random.Random(1234)
    tokenizer.prepare_plain()
    encoder = tokenizer._pieces
    assert encoder is not None
    for _ in range(3000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 60)))
        assert encoder.encode(text) == library_ids(tokenizer, text), repr(text)


def test_every_ascii_character_alone_and_in_runs(tokenizer: Tokenizer) -> None:
    encoder = PieceEncoder.of(tokenizer.prepare_plain())
    assert encoder is not None
    for code in range(128):
        for text in (chr(code), chr(code) * 3, f"a{chr(code)}b", f" {chr(code)} 1"):
            assert encoder.encode(text) == library_ids(tokenizer, text), repr(text)


def test_non_ascii_text_goes_to_the_library(tokenizer: Tokenizer) -> None:
    for text in ("café au lait", "天空为什么是蓝色的？", "e\u0301", "smile 😀 ok"):
        assert tokenizer.encode_plain(text) == library_ids(tokenizer, text)


def test_the_kept_table_stays_bounded(tokenizer: Tokenizer,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pieces_mod, "MAX_KEPT_PIECES", 50)
    encoder = PieceEncoder.of(tokenizer.prepare_plain())
    assert encoder is not None
    for i in range(400):
        text = f"word{i} and w{i * 7}x"
        assert encoder.encode(text) == library_ids(tokenizer, text)
        assert len(encoder._ids) <= 50
    long_piece = "z" * (pieces_mod.KEPT_PIECE_CHARS + 1)
    assert encoder.encode(long_piece) == library_ids(tokenizer, long_piece)
    assert long_piece not in encoder._ids


def test_the_qwen_expression_is_narrowed_for_the_standard_library() -> None:
    narrowed = pieces_mod.ascii_pattern(QWEN_PATTERN)
    assert narrowed is not None and "\\p" not in narrowed
    assert "[^\\r\\nA-Za-z0-9]?[A-Za-z]+|[0-9]|" in narrowed
    split = pieces_mod.ascii_splitter(QWEN_PATTERN)
    assert getattr(split, "__self__", None) is not None
    assert split.__self__.pattern == narrowed  # the standard library's compiled expression


@pytest.mark.parametrize(("pattern", "narrowed"), [
    (r"[\p{L}\p{N}]+|\p{N}{1,3}", "[A-Za-z0-9]+|[0-9]{1,3}"),
    (r"[]\p{L}]x|\[\p{L}", r"[]A-Za-z]x|\[[A-Za-z]"),
    (r"[^\p{L}]", "[^A-Za-z]"),
    (r"\P{L}", None),
    (r"\p{Lu}+", None),
])
def test_narrowing(pattern: str, narrowed: str | None) -> None:
    assert pieces_mod.ascii_pattern(pattern) == narrowed


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_an_expression_the_standard_library_reads_otherwise_keeps_the_regex_module() -> None:
    # POSIX classes: re compiles [[:alpha:]] as a different set, and the probes show it
    split = pieces_mod.ascii_splitter(r"\p{L}+|[[:digit:]]+|.")
    assert isinstance(split.__self__, regex.Pattern)
    assert split("ab:12") == ["ab", ":", "12"]
    # an escape re does not know (\m, start of a word) fails to compile there
    split = pieces_mod.ascii_splitter(r"\m\p{L}+|.")
    assert isinstance(split.__self__, regex.Pattern)
    assert split("ab c") == ["ab", " ", "c"]
