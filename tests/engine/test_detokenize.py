"""Incremental detokenization: whole UTF-8 characters only, stop strings held back and cut."""

from __future__ import annotations

from dashserve.engine.detokenize import IncrementalDetokenizer

# a toy byte table: ids 0..255 are single bytes, 256 is a special token
TABLE = [bytes([i]) for i in range(256)] + [b"<|im_end|>"]


def feed(detok: IncrementalDetokenizer, data: bytes) -> list[str]:
    out = []
    for b in data:
        detok.push(b)
        out.append(detok.take())
    out.append(detok.take(final=True))
    return out


def test_never_splits_a_utf8_character() -> None:
    detok = IncrementalDetokenizer(TABLE, frozenset({256}))
    pieces = feed(detok, "你好😀".encode())
    assert "".join(pieces) == "你好😀"
    assert all(p in ("", "你", "好", "😀") for p in pieces)


def test_special_tokens_are_skipped() -> None:
    detok = IncrementalDetokenizer(TABLE, frozenset({256}))
    detok.push(ord("a"))
    detok.push(256)
    detok.push(ord("b"))
    assert detok.take(final=True) == "ab"


def test_stop_string_is_cut_and_never_released() -> None:
    detok = IncrementalDetokenizer(TABLE, frozenset(), stop=("STOP",))
    released = []
    for b in b"hello ST":
        detok.push(b)
        released.append(detok.take())
    assert "".join(released) == "hello "  # "ST" could start "STOP": held back
    for b in b"OP and more":
        detok.push(b)
        released.append(detok.take())
    assert detok.stopped
    released.append(detok.take(final=True))
    assert "".join(released) == "hello "


def test_held_back_text_is_released_when_it_cannot_match() -> None:
    detok = IncrementalDetokenizer(TABLE, frozenset(), stop=("xyz",))
    assert feed(detok, b"abcxy") == ["a", "b", "c", "", "", "xy"]


def test_earliest_of_several_stop_strings_wins() -> None:
    detok = IncrementalDetokenizer(TABLE, frozenset(), stop=("world", "lo w"))
    assert "".join(feed(detok, b"hello world")) == "hel"
