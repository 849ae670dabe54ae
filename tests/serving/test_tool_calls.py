"""Tool calls: streamed parsing at every chunking, validation of tools, forced-call grammars."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest
import torch

from dashserve.errors import InvalidRequest
from dashserve.sampling.structured import GrammarCompiler, apply_masks
from dashserve.serving.tool_calls import (
    ToolCallParser,
    forced_tool_call_spec,
    parse_tool_calls,
    tool_choice_required_spec,
    validate_tools,
)
from dashserve.tokenizer import Tokenizer

VOCAB = 151936


def ids() -> Any:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def run_chunks(chunks: list[str]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Feed chunks; return (content, calls rebuilt from fragments as a client does, parser.calls)."""
    parser = ToolCallParser(id_factory=ids())
    content, merged = [], {}
    for delta in [*(parser.feed(c) for c in chunks), parser.flush()]:
        content.append(delta.content)
        for frag in delta.fragments:
            if frag.index not in merged:
                assert frag.id is not None and frag.name is not None  # first fragment of a call
                merged[frag.index] = {"id": frag.id, "name": frag.name, "arguments": ""}
            else:
                assert frag.id is None and frag.name is None
            merged[frag.index]["arguments"] += frag.arguments
    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in parser.calls]
    return "".join(content), [merged[i] for i in sorted(merged)], calls


WEATHER = '<tool_call>\n{"name": "get_weather", "arguments": {"location": "杭州", "days": 3}}\n</tool_call>'
TIME = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
TRICKY = ('<tool_call>\n{"name": "echo", "arguments": {"text": "a </tool_call> b \\" } ] {", '
          '"n": [1, {"x": null}]}}\n</tool_call>')

CASES = [
    # (text, content, [(name, arguments)])
    (WEATHER, "", [("get_weather", '{"location": "杭州", "days": 3}')]),
    (WEATHER + "\n" + TIME, "", [("get_weather", '{"location": "杭州", "days": 3}'), ("get_time", "{}")]),
    ("Let me check.\n\n" + WEATHER + "\n\nDone.", "Let me check.\n\nDone.",
     [("get_weather", '{"location": "杭州", "days": 3}')]),
    ("No tools needed, 1 < 2.\n", "No tools needed, 1 < 2.\n", []),
    (WEATHER + "\n\nDone.", "Done.", [("get_weather", '{"location": "杭州", "days": 3}')]),
    ("Hi \n" + TIME + " \n" + TIME + "\n", "Hi", [("get_time", "{}"), ("get_time", "{}")]),
    (TRICKY, "", [("echo", '{"text": "a </tool_call> b \\" } ] {", "n": [1, {"x": null}]}')]),
    # keys in another order: parsed whole when the block closes
    ('<tool_call>\n{"arguments": {"a": 1}, "name": "f"}\n</tool_call>', "", [("f", '{"a": 1}')]),
    ("<tool_call>\nnot json\n</tool_call> tail", "<tool_call>\nnot json\n</tool_call> tail", []),
    ('<tool_call>\n{"name": "f", "arguments": {"a": [1, 2', "", [("f", '{"a": [1, 2')]),  # cut by max_tokens
    ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}', "", [("f", '{"a": 1}')]),  # no closing tag
    ('<tool_call>\n{"name": "f", "argu', "<tool_call>\n{\"name\": \"f\", \"argu", []),  # header never finished
    ('<tool_call>\n{"name": "f", "arguments": 42}\n</tool_call>', "", [("f", "42")]),
    ("<tool_c", "<tool_c", []),
]


@pytest.mark.parametrize(("text", "content", "calls"), CASES)
def test_every_chunking_gives_the_same_result(
    text: str, content: str, calls: list[tuple[str, str]]
) -> None:
    expected = [{"id": f"call_{i}", "name": n, "arguments": a} for i, (n, a) in enumerate(calls)]
    whole = run_chunks([text])
    assert whole == (content, expected, expected)
    for cut in range(len(text) + 1):
        assert run_chunks([text[:cut], text[cut:]]) == whole, cut
    assert run_chunks(list(text)) == whole
    rng = random.Random(len(text))
    for _ in range(30):
        cuts = sorted(rng.sample(range(len(text) + 1), min(5, len(text) + 1)))
        assert run_chunks([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]) == whole


def test_arguments_stream_before_the_call_closes() -> None:
    parser = ToolCallParser(id_factory=ids())
    assert parser.feed("Sure.<tool_").content == "Sure."
    first = parser.feed('call>\n{"name": "f", "arguments": {"q": "ab')
    assert [(f.index, f.id, f.name, f.arguments) for f in first.fragments] == [(0, "call_0", "f", '{"q": "ab')]
    second = parser.feed('c"}}\n</tool_call>')
    assert [(f.index, f.id, f.name, f.arguments) for f in second.fragments] == [(0, None, None, 'c"}')]
    assert parser.calls[0].complete and parser.calls[0].to_dict() == {
        "index": 0, "id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"q": "abc"}'}}


def test_long_arguments_in_one_chunk_keep_the_model_text() -> None:
    args = '{"text": "' + "x" * 2000 + '",  "n": 1}'
    text = f'<tool_call>\n{{"name": "f", "arguments": {args}}}\n</tool_call>'
    assert run_chunks([text])[1][0]["arguments"] == args
    assert run_chunks([text[:700], text[700:]]) == run_chunks([text])


def test_completeness_flags() -> None:
    _, calls = parse_tool_calls(WEATHER + '<tool_call>\n{"name": "g", "arguments": {"a": ')
    assert [c.complete for c in calls] == [True, False]
    assert parse_tool_calls(TRICKY)[1][0].complete
    extra_key = '<tool_call>\n{"name": "f", "arguments": {"a": 1}, "x": 2}\n</tool_call>'
    assert not parse_tool_calls(extra_key)[1][0].complete


def test_ids_are_unique_call_hex() -> None:
    _, calls = parse_tool_calls(WEATHER + TIME)
    assert len({c.id for c in calls}) == 2
    assert all(c.id.startswith("call_") and len(c.id) == 29 for c in calls)


# ---- validate_tools --------------------------------------------------------------------------


def tool(name: str = "get_weather", **function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": "d", **function}}


def test_validate_tools_normalises() -> None:
    params = {"type": "object", "properties": {"location": {"type": "string"}}}
    original = [tool(parameters=params, required=["location"]), tool("now", parameters={}), tool("later")]
    snapshot = json.dumps(original)
    out = validate_tools(original)
    assert out[0]["function"]["parameters"]["required"] == ["location"]  # misplaced `required` moved
    assert "required" not in out[0]["function"]
    no_args = {"type": "object", "properties": {}, "additionalProperties": False}
    assert out[1]["function"]["parameters"] == no_args
    assert out[2]["function"]["parameters"] == no_args
    assert json.dumps(original) == snapshot  # inputs untouched


@pytest.mark.parametrize(("tools", "message"), [
    ([], "non-empty"),
    ("x", "non-empty"),
    ([{"type": "retrieval", "function": {"name": "f"}}], "type must be 'function'"),
    ([{"type": "function"}], "function must be an object"),
    ([tool("bad name")], "must match"),
    ([tool("x" * 65)], "must match"),
    ([tool("f"), tool("f")], "used by two tools"),
    ([tool(parameters=[1])], "JSON schema object"),
    ([tool(parameters={"type": "array"})], "type 'object'"),
    ([tool(parameters={"type": "object"}, required="location")], "array of strings"),
    ([tool(description=5)], "description"),
])
def test_validate_tools_rejects(tools: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_tools(tools)
    assert info.value.param == "tools" and message in info.value.message


# ---- forced calls: random walks over the grammar ---------------------------------------------

TOOLS = validate_tools([
    tool(parameters={"type": "object", "properties": {
        "location": {"type": "string", "maxLength": 10},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "additionalProperties": False}, required=["location", "days"]),
    tool("get_time", parameters={}),
    tool("search", parameters={"type": "object", "properties": {
        "query": {"type": "string", "minLength": 1, "maxLength": 20},
        "filters": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,5}$"}, "maxItems": 3}},
        "required": ["query"], "additionalProperties": False}),
])


@pytest.fixture(scope="module")
def compiler(tokenizer: Tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tokenizer, VOCAB)


def walk(compiler: GrammarCompiler, matcher: Any, rng: random.Random) -> list[int]:
    """Random allowed tokens (EOS taken with probability 1/2 once allowed) until EOS."""
    out: list[int] = []
    for _ in range(300):
        logits = torch.zeros(1, VOCAB)
        apply_masks(logits, [0], [matcher])
        allowed = torch.nonzero(logits[0] == 0).flatten()
        if compiler.eos_token_id in allowed and (rng.random() < 0.5 or allowed.numel() == 1):
            assert matcher.accept_token(compiler.eos_token_id)
            return out
        token = int(allowed[rng.randrange(allowed.numel())])
        assert matcher.accept_token(token)
        out.append(token)
    raise AssertionError("no end within 300 tokens")


def check_arguments(name: str, arguments: dict[str, Any]) -> None:
    if name == "get_weather":
        assert set(arguments) <= {"location", "unit", "days"} and {"location", "days"} <= set(arguments)
        assert isinstance(arguments["location"], str) and len(arguments["location"]) <= 10
        assert arguments.get("unit", "celsius") in ("celsius", "fahrenheit")
        assert type(arguments["days"]) is int and 1 <= arguments["days"] <= 7
    elif name == "get_time":
        assert arguments == {}
    else:
        assert 1 <= len(arguments["query"]) <= 20 and len(arguments.get("filters", [])) <= 3


@pytest.mark.parametrize("index", range(len(TOOLS)))
def test_forced_call_always_parses_and_validates(
    index: int, compiler: GrammarCompiler, tokenizer: Tokenizer
) -> None:
    compiled = compiler.compile(forced_tool_call_spec(TOOLS[index]))
    name = TOOLS[index]["function"]["name"]
    for seed in range(4):
        tokens = walk(compiler, compiler.matcher(compiled), random.Random(seed))
        assert tokens[0] == tokenizer.token_to_id("<tool_call>")  # the single added token
        assert tokens[-1] == tokenizer.token_to_id("</tool_call>")
        content, calls = parse_tool_calls(tokenizer.decode(tokens))
        assert content == "" and len(calls) == 1 and calls[0].complete and calls[0].name == name
        check_arguments(name, json.loads(calls[0].arguments))


def test_required_choice_picks_any_tool(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    compiled = compiler.compile(tool_choice_required_spec(TOOLS))
    names = set()
    for seed in range(12):
        tokens = walk(compiler, compiler.matcher(compiled), random.Random(seed))
        content, calls = parse_tool_calls(tokenizer.decode(tokens))
        assert content == "" and len(calls) == 1 and calls[0].complete
        check_arguments(calls[0].name, json.loads(calls[0].arguments))
        names.add(calls[0].name)
    assert len(names) >= 2


def test_unsupported_parameters_schema_is_reported(compiler: GrammarCompiler) -> None:
    bad = validate_tools([tool(parameters={"type": "object", "not": {"required": ["a"]}})])[0]
    with pytest.raises(InvalidRequest) as info:
        compiler.compile(forced_tool_call_spec(bad))
    assert info.value.param == "tools" and "not" in info.value.message
