"""resolve_features combinations, the thinking prompt opener and the ChatText processor."""

from __future__ import annotations

import pytest

from dashserve.contracts.chat_format import opens_thinking
from dashserve.errors import InvalidRequest
from dashserve.serving.assemble import ChatText
from dashserve.serving.features import JSON_WORD_MESSAGE, resolve_features
from dashserve.serving.profiles import profile_for
from dashserve.serving.request import GenerationRequest, Message, RequestedParams

PROFILE = profile_for("qwen-plus").fitted(8192)
NO_THINK = profile_for("qwen-max").fitted(8192)
TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}


def request(content: str = "hi", **kwargs: object) -> GenerationRequest:
    params = kwargs.pop("params", RequestedParams())
    return GenerationRequest("r", "qwen-plus", (Message("user", content),),
                             params=params, **kwargs)  # type: ignore[arg-type]


def test_response_formats() -> None:
    with pytest.raises(InvalidRequest) as info:
        resolve_features(request(response_format={"type": "json_object"}), PROFILE)
    assert info.value.message == JSON_WORD_MESSAGE and info.value.param == "response_format"
    spec = resolve_features(request("Reply in JSON", response_format={"type": "json_object"}),
                            PROFILE).structured
    assert spec is not None and spec.json_object
    schema = {"type": "object"}
    feats = resolve_features(request(response_format={"type": "json_schema", "json_schema": {
        "name": "n", "schema": schema}}), PROFILE)
    assert feats.structured is not None and feats.structured.json_schema == schema
    with pytest.raises(InvalidRequest):
        resolve_features(request(response_format={"type": "json_schema", "json_schema": {
            "name": "n", "schema": [1]}}), PROFILE)


def test_tool_choices() -> None:
    auto = resolve_features(request(tools=(TOOL,)), PROFILE)
    assert auto.parse_tools and auto.template_tools[0]["function"]["name"] == "f"
    none = resolve_features(request(tools=(TOOL,), tool_choice="none"), PROFILE)
    assert not none.parse_tools and not none.template_tools
    forced = resolve_features(request(tools=(TOOL,), tool_choice={
        "type": "function", "function": {"name": "f"}}), PROFILE)
    assert forced.structured is not None and forced.structured.grammar
    for choice in ({"type": "function", "function": {"name": "g"}}, "sometimes"):
        with pytest.raises(InvalidRequest) as info:
            resolve_features(request(tools=(TOOL,), tool_choice=choice), PROFILE)
        assert info.value.param == "tool_choice"
    with pytest.raises(InvalidRequest):
        resolve_features(request(tools=(TOOL,), tool_choice="required",
                                 params=RequestedParams(enable_thinking=True)), PROFILE)


def test_thinking_needs_a_thinking_model() -> None:
    on = RequestedParams(enable_thinking=True)
    assert resolve_features(request(params=on, stream=True), PROFILE).thinking
    assert not resolve_features(request(params=on), NO_THINK).thinking


def test_thinking_is_stream_only() -> None:
    with pytest.raises(InvalidRequest) as exc:
        resolve_features(request(params=RequestedParams(enable_thinking=True)), PROFILE)
    assert exc.value.param == "enable_thinking" and "stream" in exc.value.message


def test_opens_thinking() -> None:
    assert opens_thinking("x<|im_start|>assistant\n") == "x<|im_start|>assistant\n<think>\n"
    assert opens_thinking("a<think>\n") == "a<think>\n"
    assert opens_thinking("<think>\n\n</think>\n\n").endswith("</think>\n\n<think>\n")


def test_chat_text_splits_reasoning_then_tool_calls() -> None:
    text = ChatText(thinking=True, tools=True)
    pieces = [text.feed(c) for c in "why\n</think>\n\n<tool_call>\n"
              '{"name": "f", "arguments": {}}\n</tool_call>']
    pieces.append(text.flush())
    assert "".join(p.reasoning_content for p in pieces) == "why"
    assert "".join(p.content for p in pieces) == ""
    frags = [f for p in pieces for f in p.tool_calls]
    assert frags[0].name == "f" and "".join(f.arguments for f in frags) == "{}"


def test_without_parallel_tool_calls_only_the_first_call_is_kept() -> None:
    text = ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
            '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>')
    for parallel, names in ((True, ["f", "g"]), (False, ["f"])):
        chat = ChatText(tools=True, parallel=parallel)
        pieces = [chat.feed(text[i:i + 7]) for i in range(0, len(text), 7)] + [chat.flush()]
        got = [f.name for p in pieces for f in p.tool_calls if f.name]
        assert got == names
