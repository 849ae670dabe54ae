"""Messages → prompt ids through the chat template; partial mode; message checks."""

from __future__ import annotations

import pytest

from dashserve.errors import InvalidRequest, MissingInput
from dashserve.serving.prompt import build_prompt, render_prompt
from dashserve.serving.request import Message
from tests.utils.fake_tokenizer import FakeTokenizer


def test_template_then_encode() -> None:
    tok = FakeTokenizer()
    messages = [Message("system", "s"), Message("user", "u")]
    ids = build_prompt(tok, messages, enable_thinking=False)
    assert tok.decode(ids) == ("<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n"
                               "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    call = tok.template_calls[-1]
    assert call["enable_thinking"] is False and call["add_generation_prompt"] is True
    assert call["tools"] is None


def test_extra_fields_reach_the_template() -> None:
    tok = FakeTokenizer()
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    render_prompt(tok, [Message("user", "u"), Message("assistant", "", extra=(
        ("tool_calls", calls),)), Message("tool", "r", extra=(("tool_call_id", "c"),))],
        enable_thinking=False)
    sent = tok.template_calls[-1]["messages"]
    assert sent[1]["tool_calls"] == calls and sent[2]["tool_call_id"] == "c"


def test_partial_assistant_is_continued() -> None:
    tok = FakeTokenizer()
    text = render_prompt(tok, [Message("user", "u"), Message("assistant", "abc", partial=True)],
                         enable_thinking=True)
    assert text.endswith("<|im_start|>assistant\nabc")
    assert len(tok.template_calls[-1]["messages"]) == 1


@pytest.mark.parametrize("messages", [
    [Message("robot", "x")],
    [Message("assistant", "a", partial=True), Message("user", "u")],
    [Message("user", "u", partial=True)],
    [Message("system", "fileid://file-1"), Message("user", "u")],
])
def test_bad_messages(messages: list[Message]) -> None:
    with pytest.raises(InvalidRequest):
        render_prompt(FakeTokenizer(), messages, enable_thinking=False)


def test_no_messages() -> None:
    with pytest.raises(MissingInput):
        render_prompt(FakeTokenizer(), [], enable_thinking=False)
