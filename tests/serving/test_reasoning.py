"""Reasoning split: tags and surrounding newlines removed, chunking never changes the result."""

from __future__ import annotations

import random

import pytest

from dashserve.serving.reasoning import ReasoningSplitter
from tests.utils.reasoning import split_reasoning


def run_chunks(chunks: list[str], starts_in_thinking: bool) -> tuple[str, str]:
    splitter = ReasoningSplitter(starts_in_thinking)
    reasoning, content = [], []
    for chunk in chunks:
        r, c = splitter.feed(chunk)
        reasoning.append(r)
        content.append(c)
    r, c = splitter.flush()
    return "".join(reasoning) + r, "".join(content) + c


CASES = [
    # (text, starts_in_thinking, reasoning, content)
    ("<think>\nLet me think.\nStep 2.\n</think>\n\nThe answer is 4.", False,
     "Let me think.\nStep 2.", "The answer is 4."),
    ("Let me think.\n</think>\n\nThe answer.", True, "Let me think.", "The answer."),
    ("<think>\nplan\n</think>\n\nanswer", True, "plan", "answer"),  # prompt opened it, model repeats
    ("The answer is 4.", False, "", "The answer is 4."),
    ("\n\nHello <think> not a tag here </think>\n", False, "", "\n\nHello <think> not a tag here </think>\n"),
    ("<think>\n\n</think>\n\nanswer", False, "", "answer"),
    ("<think>\nstill thinking when cut off\n\n", False, "still thinking when cut off\n\n", ""),
    ("reasoning only, then max_tokens", True, "reasoning only, then max_tokens", ""),
    ("a < b and a <th\n</think>\n\nx </think> y\n\n", True, "a < b and a <th", "x </think> y\n\n"),
    ("<thin", False, "", "<thin"),
    ("<thin", True, "<thin", ""),
    ("</thi", True, "</thi", ""),
    ("<think>\n推理过程😀\n</think>\n\n答案", False, "推理过程😀", "答案"),
    ("<think>\nforced end\n</think>\n\n", False, "forced end", ""),  # thinking_budget hit, then EOS
    ("", False, "", ""),
    ("", True, "", ""),
]


@pytest.mark.parametrize(("text", "starts", "reasoning", "content"), CASES)
def test_every_chunking_gives_the_same_split(text: str, starts: bool, reasoning: str, content: str) -> None:
    assert split_reasoning(text, starts) == (reasoning, content)
    for cut in range(len(text) + 1):
        assert run_chunks([text[:cut], text[cut:]], starts) == (reasoning, content), cut
    assert run_chunks(list(text), starts) == (reasoning, content)
    rng = random.Random(len(text))
    for _ in range(20):
        cuts = sorted(rng.sample(range(len(text) + 1), min(4, len(text) + 1)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert run_chunks(pieces, starts) == (reasoning, content)


def test_reasoning_streams_before_the_end_tag() -> None:
    splitter = ReasoningSplitter(starts_in_thinking=False)
    assert splitter.feed("<thi") == ("", "")
    assert splitter.feed("nk>\nFirst") == ("First", "")
    assert splitter.in_thinking and splitter.thought
    assert splitter.feed(" idea.\n") == (" idea.", "")  # the newline may precede </think>
    assert splitter.feed("More.</th") == ("\nMore.", "")
    assert splitter.feed("ink>\n\n") == ("", "")
    assert not splitter.in_thinking
    assert splitter.feed("Answer") == ("", "Answer")
    assert splitter.flush() == ("", "")


def test_plain_output_is_released_at_once() -> None:
    splitter = ReasoningSplitter(starts_in_thinking=False)
    assert splitter.feed("Hi") == ("", "Hi")
    assert not splitter.thought
    assert splitter.feed(" <think>") == ("", " <think>")


def test_custom_tags() -> None:
    splitter = ReasoningSplitter(True, start_tag="<reasoning>", end_tag="</reasoning>")
    assert splitter.feed("why</reasoning>\nso") == ("why", "so")
