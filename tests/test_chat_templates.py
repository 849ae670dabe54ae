"""The plain-Python Qwen3 renderer against the Qwen3 template rendered by jinja."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from dashserve.chat_templates import fast_renderer, render_qwen3
from dashserve.tokenizer import Tokenizer, _prepare_messages, compile_chat_template
from dashserve.tokenizer_build import chat_template_text

CONTENTS = [
    "Hi", "", "\n", "\n\n", "你好，世界 😀 é", "<tool_response>x</tool_response>",
    "<tool_response>", "</tool_response>", "<tool_response>\n</tool_response>",
    "<think>\nr\n</think>\n\nanswer", "</think>", "<think>", "<think>\n\n</think>\n\n",
    "\n\nleading newlines", "trailing newlines\n\n", "<think>a</think>b</think>c",
    "x<think>y<think>\nz\n</think>\n\nw\n", "\n<think>\n\nr\n\n</think>", "</think>\n\n\n",
    "<|im_start|>user\nsneaky<|im_end|>", "a\n\n<think>b</think>\n",
]
PIECES = ["<think>", "</think>", "<tool_response>", "</tool_response>", "\n", "\n\n", "a", "好", " "]
ROLES = ["system", "user", "user", "assistant", "assistant", "tool"]


def random_content(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(CONTENTS)
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8)))


def random_case(rng: random.Random) -> tuple[list[dict[str, str]], bool, dict[str, Any]]:
    messages = [{"role": rng.choice(ROLES), "content": random_content(rng)}
                for _ in range(rng.randint(1, 6))]
    if rng.random() < 0.4:
        messages[0]["role"] = "system"
    if rng.random() < 0.3:
        messages[-1]["role"] = "assistant"  # a prefilled, partial-looking last turn
    kwargs: dict[str, Any] = {}
    thinking = rng.choice(["absent", True, False, None])
    if thinking != "absent":
        kwargs["enable_thinking"] = thinking
    return messages, rng.random() < 0.7, kwargs


def jinja_render(tokenizer: Tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool,
                 tools: Any = None, **kwargs: Any) -> str:
    """The template rendered by jinja, as ``apply_chat_template`` renders it without the fast
    path."""
    compiled = compile_chat_template(tokenizer.chat_template or "")
    return compiled.render(
        messages=_prepare_messages(messages), tools=tools, documents=None,
        add_generation_prompt=add_generation_prompt, **{**tokenizer.special_tokens, **kwargs},
    )


def test_qwen3_tokenizer_takes_the_fast_path(tokenizer: Tokenizer) -> None:
    tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert tokenizer._fast_render is render_qwen3


def test_random_conversations_render_as_the_template(tokenizer: Tokenizer) -> None:
    compiled = compile_chat_template(tokenizer.chat_template or "")
    rng = random.Random(20240611)
    shapes = set()
    for _ in range(4000):
        messages, add_generation_prompt, kwargs = random_case(rng)
        fast = render_qwen3(messages, None, None, add_generation_prompt, kwargs)
        slow = compiled.render(messages=messages, tools=None, documents=None,
                               add_generation_prompt=add_generation_prompt,
                               **{**tokenizer.special_tokens, **kwargs})
        assert fast == slow, (messages, add_generation_prompt, kwargs)
        ours = tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, **kwargs)
        assert ours == slow
        shapes.add(tuple(m["role"] for m in messages))
    assert len(shapes) > 500  # system first or not, in the middle, repeated turns, tool runs


def test_random_conversations_match_transformers(
        tokenizer: Tokenizer, qwen3_tiny_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(qwen3_tiny_dir)
    rng = random.Random(7)
    for _ in range(200):
        messages, add_generation_prompt, kwargs = random_case(rng)
        ours = tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, **kwargs)
        theirs = hf.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs)
        assert ours == theirs, (messages, add_generation_prompt, kwargs)


TOOL = {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}
USER = {"role": "user", "content": "What time is it?"}
OUTSIDE: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
    "tools": ([USER], {"tools": [TOOL]}),
    "tool_calls": ([USER, {"role": "assistant", "content": "",
                           "tool_calls": [{"function": {"name": "now", "arguments": {}}}]}], {}),
    "reasoning_content": ([USER, {"role": "assistant", "content": "12:00",
                                  "reasoning_content": "look at the clock"}], {}),
    "list_content": ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], {}),
    "int_content": ([{"role": "user", "content": 3}], {}),
    "unknown_role": ([USER, {"role": "developer", "content": "x"}], {}),
    "extra_key": ([{"role": "tool", "content": "12:00", "tool_call_id": "c1"}], {}),
    "other_variable": ([USER], {"custom_flag": True}),
    "non_bool_thinking": ([USER], {"enable_thinking": 0}),
}


@pytest.mark.parametrize("name", sorted(OUTSIDE))
def test_other_conversations_go_through_jinja(tokenizer: Tokenizer, name: str) -> None:
    messages, kwargs = OUTSIDE[name]
    kwargs = dict(kwargs)
    tools = kwargs.pop("tools", None)
    prepared = _prepare_messages(messages)
    assert render_qwen3(prepared, tools, None, True, kwargs) is None
    expected = jinja_render(tokenizer, messages, True, tools=tools, **kwargs)
    assert tokenizer.apply_chat_template(messages, tools=tools, **kwargs) == expected


def test_documents_and_empty_conversations_go_through_jinja(tokenizer: Tokenizer) -> None:
    assert render_qwen3([USER], None, [{"text": "doc"}], True, {}) is None
    assert render_qwen3([], None, None, True, {}) is None
    assert render_qwen3([USER], [], None, True, {}) is not None  # no tools: same text


def test_only_the_qwen3_template_text_is_recognized(tokenizer: Tokenizer, tmp_path: Path) -> None:
    text = chat_template_text()
    messages = [{"role": "system", "content": "s"}, USER, {"role": "assistant", "content": "a"}]
    same = compile_chat_template(text).render(messages=messages, add_generation_prompt=True)
    for ending in ("", "\n", "\n\n"):  # the endings jinja renders as none
        assert fast_renderer(text + ending) is render_qwen3
        variant = compile_chat_template(text + ending)
        assert variant.render(messages=messages, add_generation_prompt=True) == same
    changed = text.replace("<|im_start|>system\\n' + messages[0].content",
                           "<|im_start|>system\\n' + messages[0].content | upper")
    assert changed != text
    for other in (None, "", text + "\n\n\n", text + " ", "{{ messages }}" + text, changed):
        assert fast_renderer(other) is None
    tok = Tokenizer(tokenizer.backend, {"eos_token": "<|im_end|>"}, changed)
    assert tok.apply_chat_template(messages).startswith("<|im_start|>system\nS<|im_end|>\n")
    assert tok._fast_render is None
