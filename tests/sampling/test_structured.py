"""Grammar-constrained decoding with llguidance: random walks over the allowed tokens must
always end in a document that parses and validates; masks, caching and errors."""

from __future__ import annotations

import json
import math
import random
import re
from typing import Any

import pytest
import torch

from dashserve.contracts.params import StructuredOutputSpec
from dashserve.errors import InvalidRequest
from dashserve.sampling.structured import (
    GrammarCompiler,
    apply_masks,
    bitmask_words,
    disallowed_from_bitmask,
)
from dashserve.tokenizer import Tokenizer

VOCAB = 151936  # the model's padded vocabulary; the tokenizer has 151669 ids
MAX_STEPS = 400


@pytest.fixture(scope="module")
def compiler(tokenizer: Tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tokenizer, VOCAB)


@pytest.fixture(scope="module")
def closers(tokenizer: Tokenizer) -> torch.Tensor:
    """Tokens that can close a string, number, array or object (the walk's bias set)."""
    return torch.tensor([any(c in b for c in b'"}],') for b in tokenizer.id_to_bytes[:VOCAB]])


def random_walk(
    compiler: GrammarCompiler, spec: StructuredOutputSpec, rng: random.Random, closers: torch.Tensor,
) -> list[int]:
    """Pick random allowed tokens until end-of-sequence. Bias (documented): EOS is taken with
    probability 1/2 once allowed, and half the other steps pick among allowed tokens holding
    a closing character, so unbounded strings, numbers and containers end quickly."""
    matcher = compiler.matcher(compiler.compile(spec))
    eos = compiler.eos_token_id
    out: list[int] = []
    for _ in range(MAX_STEPS):
        logits = torch.zeros(1, VOCAB)
        apply_masks(logits, [0], [matcher])
        allowed = logits[0] == 0
        assert allowed.any(), "the grammar allowed nothing"
        assert not allowed[151669:].any(), "padding ids must never be allowed"
        if allowed[eos] and (rng.random() < 0.5 or int(allowed.sum()) == 1):
            assert matcher.accept_token(eos)
            assert matcher.is_terminated()
            return out
        pool = allowed & closers if rng.random() < 0.5 else allowed
        ids = torch.nonzero(pool if pool.any() else allowed).flatten()
        token = int(ids[rng.randrange(ids.numel())])
        assert token != eos or matcher.is_accepting()
        assert matcher.accept_token(token), matcher.error
        out.append(token)
    raise AssertionError(f"no end within {MAX_STEPS} tokens")


# ---- a tiny JSON-schema validator (jsonschema is not installed) -----------------------------

_TYPES = {
    "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> None:
    root = root or schema
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        validate(value, node, root)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert any(_TYPES[t](value) for t in types), (value, types)
    if "enum" in schema:
        assert value in schema["enum"], value
    if "const" in schema:
        assert value == schema["const"], value
    if "anyOf" in schema:
        assert any(_valid(value, s, root) for s in schema["anyOf"]), value
    if isinstance(value, str):
        _validate_string(value, schema)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _validate_number(value, schema)
    elif isinstance(value, list):
        _validate_array(value, schema, root)
    elif isinstance(value, dict):
        _validate_object(value, schema, root)


def _valid(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    try:
        validate(value, schema, root)
    except AssertionError:
        return False
    return True


def _validate_string(value: str, schema: dict[str, Any]) -> None:
    assert schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf), value
    if "pattern" in schema:
        assert re.search(schema["pattern"], value), value
    if schema.get("format") == "date":
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", value), value
    if schema.get("format") == "email":
        assert re.fullmatch(r"[^@\s]+@[^@\s]+", value), value


def _validate_number(value: float, schema: dict[str, Any]) -> None:
    assert schema.get("minimum", -math.inf) <= value <= schema.get("maximum", math.inf), value
    if "exclusiveMinimum" in schema:
        assert value > schema["exclusiveMinimum"], value
    if "exclusiveMaximum" in schema:
        assert value < schema["exclusiveMaximum"], value
    if "multipleOf" in schema:
        assert value % schema["multipleOf"] == 0, value


def _validate_array(value: list[Any], schema: dict[str, Any], root: dict[str, Any]) -> None:
    assert schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf), value
    prefix = schema.get("prefixItems", [])
    for item, sub in zip(value, prefix, strict=False):
        validate(item, sub, root)
    if isinstance(schema.get("items"), dict):
        for item in value[len(prefix):]:
            validate(item, schema["items"], root)
    elif schema.get("items") is False:
        assert len(value) <= len(prefix)


def _validate_object(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> None:
    props = schema.get("properties", {})
    for key in schema.get("required", []):
        assert key in value, (key, value)
    for key, item in value.items():
        if key in props:
            validate(item, props[key], root)
        elif schema.get("additionalProperties") is False:
            raise AssertionError(f"unexpected property {key!r}")
        elif isinstance(schema.get("additionalProperties"), dict):
            validate(item, schema["additionalProperties"], root)


def assert_no_free_whitespace(text: str) -> None:
    """Outside strings, the only blanks are the fixed separators ", " and ": "."""
    skeleton = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    assert not re.search(r"\s", skeleton.replace(", ", ",").replace(": ", ":")), text


def _obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or list(props),
            "additionalProperties": False, **extra}


SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": _obj({"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}}),
    "nested": _obj({"user": _obj({"id": {"type": "integer", "minimum": 1},
                                  "address": _obj({"city": {"type": "string", "maxLength": 8},
                                                   "zip": {"type": "string", "pattern": "^[0-9]{5}$"}})})}),
    "array_bounds": _obj({"xs": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5},
                                 "minItems": 2, "maxItems": 4}}),
    "enum": _obj({"color": {"enum": ["red", "green", "blue"]}, "size": {"enum": [1, 2, 3, None]}}),
    "int_exclusive": _obj({"n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}}),
    "number_bounds": _obj({"x": {"type": "number", "minimum": -1.5, "maximum": 2.25}}),
    "string_lengths": _obj({"s": {"type": "string", "minLength": 3, "maxLength": 6}}),
    "pattern": _obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}}),
    "optional_props": _obj({"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"}},
                           required=["a"]),
    "any_of_scalars": _obj({"v": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "integer"}]}}),
    "any_of_objects": _obj({"shape": {"anyOf": [
        _obj({"kind": {"const": "circle"}, "r": {"type": "number", "minimum": 0}}),
        _obj({"kind": {"const": "square"}, "side": {"type": "integer", "minimum": 1, "maximum": 9}}),
    ]}}),
    "const": _obj({"version": {"const": 2}, "tag": {"const": "v2"}}),
    "nullable": _obj({"note": {"type": ["string", "null"], "maxLength": 5}}),
    "array_of_objects": _obj({"items": {"type": "array", "maxItems": 3,
                                        "items": _obj({"sku": {"type": "string", "pattern": "^[a-z]{2}[0-9]$"},
                                                       "qty": {"type": "integer", "minimum": 1, "maximum": 99}})}}),
    "matrix": _obj({"m": {"type": "array", "minItems": 2, "maxItems": 2,
                          "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}}}),
    "defs_ref": {**_obj({"home": {"$ref": "#/$defs/point"}, "work": {"$ref": "#/$defs/point"}}),
                 "$defs": {"point": _obj({"x": {"type": "integer"}, "y": {"type": "integer"}})}},
    "date_format": _obj({"day": {"type": "string", "format": "date"}}),
    "email_format": _obj({"to": {"type": "string", "format": "email"}}),
    "tuple": _obj({"pair": {"type": "array", "prefixItems": [{"type": "string", "maxLength": 3},
                                                             {"type": "boolean"}], "items": False}}),
    "multiple_of": _obj({"n": {"type": "integer", "multipleOf": 5, "minimum": 0, "maximum": 100}}),
    "unicode_keys": _obj({"城市": {"type": "string", "maxLength": 4}, "温度": {"type": "number"}}),
    "top_level_array": {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 1, "maxItems": 3},
    "string_map": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}, "maxProperties": 3},
    "annotations": {**_obj({"q": {"type": "string", "description": "a question", "title": "Q", "maxLength": 9}}),
                    "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "T", "description": "d"},
    "deep": _obj({"a": _obj({"b": _obj({"c": _obj({"d": {"type": "array", "items": {"type": "boolean"},
                                                          "maxItems": 2}})})})}),
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_random_walk_always_validates(name: str, compiler: GrammarCompiler, tokenizer: Tokenizer,
                                      closers: torch.Tensor) -> None:
    schema = SCHEMAS[name]
    spec = StructuredOutputSpec(json_schema=schema)
    for seed in range(3):
        tokens = random_walk(compiler, spec, random.Random(seed), closers)
        text = tokenizer.decode(tokens)
        value = json.loads(text)
        validate(value, schema)
        assert_no_free_whitespace(text)


def test_json_object_gives_any_object(compiler: GrammarCompiler, tokenizer: Tokenizer,
                                      closers: torch.Tensor) -> None:
    for seed in range(5):
        tokens = random_walk(compiler, StructuredOutputSpec(json_object=True), random.Random(seed), closers)
        text = tokenizer.decode(tokens)
        assert isinstance(json.loads(text), dict)
        assert_no_free_whitespace(text)


def test_user_whitespace_options_are_ignored(compiler: GrammarCompiler) -> None:
    loose = {"x-guidance": {"whitespace_flexible": True}, **SCHEMAS["flat"]}
    assert compiler.compile(StructuredOutputSpec(json_schema=loose)).key == \
        compiler.compile(StructuredOutputSpec(json_schema=SCHEMAS["flat"])).key


@pytest.mark.parametrize(("schema", "named"), [
    ({"type": "object", "not": {"required": ["a"]}}, "not"),
    ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "if"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "object", "propertyNames": {"pattern": "^a"}}, "propertyNames"),
    ({"type": "array", "contains": {"type": "integer"}}, "contains"),
    ({"$ref": "https://example.com/schema.json"}, "https://example.com/schema.json"),
    ({"type": "string", "pattern": "(?=a)b"}, "look-around"),
    ({"type": "string", "format": "credit-card"}, "credit-card"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
])
def test_unsupported_features_are_named(schema: dict[str, Any], named: str, compiler: GrammarCompiler) -> None:
    with pytest.raises(InvalidRequest) as info:
        compiler.compile(StructuredOutputSpec(json_schema=schema))
    assert info.value.param == "response_format"
    assert named in info.value.message


def test_bad_specs(compiler: GrammarCompiler) -> None:
    with pytest.raises(InvalidRequest, match="exactly one"):
        compiler.compile(StructuredOutputSpec())
    with pytest.raises(InvalidRequest, match="exactly one"):
        compiler.compile(StructuredOutputSpec(json_object=True, grammar='start: "a"'))
    with pytest.raises(InvalidRequest) as info:
        compiler.compile(StructuredOutputSpec(grammar='start: "a" undefined_rule'))
    assert info.value.param == "tools" and "undefined_rule" in info.value.message


def test_cache_hits_order_and_eviction(tokenizer: Tokenizer) -> None:
    small = GrammarCompiler(tokenizer, VOCAB, cache_size=2)
    a = StructuredOutputSpec(json_schema=SCHEMAS["flat"])
    first = small.compile(a)
    assert small.compile(StructuredOutputSpec(json_schema=json.loads(json.dumps(SCHEMAS["flat"])))) is first
    assert (small.hits, small.misses) == (1, 1)
    swapped = {**SCHEMAS["flat"], "properties": dict(reversed(SCHEMAS["flat"]["properties"].items()))}
    assert small.compile(StructuredOutputSpec(json_schema=swapped)).key != first.key  # order matters
    small.compile(StructuredOutputSpec(json_object=True))
    assert len(small) == 2 and small.compile(a) is not first  # evicted, compiled again
    assert small.misses == 4


def test_refused_token_leaves_state_intact(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    matcher = compiler.matcher(compiler.compile(StructuredOutputSpec(json_schema=SCHEMAS["const"])))
    assert not matcher.accept_token(tokenizer.encode("\n\n")[0])  # e.g. forced after </think>
    assert matcher.num_rejected == 1 and not matcher.error
    for token in tokenizer.encode('{"version": 2, "tag": "v2"}'):
        assert matcher.accept_token(token)
    assert matcher.is_accepting() and matcher.is_terminated()
    assert not matcher.accept_token(tokenizer.encode("x")[0])
    assert matcher.accept_token(compiler.eos_token_id)


def _expected_mask(matcher: Any) -> torch.Tensor:
    bitmask = torch.empty((1, bitmask_words(VOCAB)), dtype=torch.int32)
    matcher.fill_bitmask(bitmask, 0)
    return torch.from_numpy(disallowed_from_bitmask(bitmask, VOCAB)[0].copy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_apply_masks_on_mixed_batch(dtype: torch.dtype, compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    """float64 takes the generic torch path (the one GPU logits take)."""
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():  # as in the engine
        logits = torch.randn(5, VOCAB + 64, generator=gen).to(dtype)  # wider than the grammar's vocab
    original = logits.clone()
    schema = compiler.matcher(compiler.compile(StructuredOutputSpec(json_schema=SCHEMAS["nested"])))
    for token in tokenizer.encode('{"user": {"id": 1'):
        assert schema.accept_token(token)
    obj = compiler.matcher(compiler.compile(StructuredOutputSpec(json_object=True)))
    done = compiler.matcher(compiler.compile(StructuredOutputSpec(json_schema=SCHEMAS["const"])))
    for token in tokenizer.encode('{"version": 2, "tag": "v2"}'):
        assert done.accept_token(token)
    expected = {0: _expected_mask(schema), 2: _expected_mask(obj), 3: _expected_mask(done)}
    with torch.inference_mode():
        apply_masks(logits, [0, 2, 3], [schema, obj, done])
    for row in (1, 4):
        assert torch.equal(logits[row], original[row])
    for row, disallowed in expected.items():
        assert torch.isinf(logits[row, VOCAB:]).all()
        assert torch.isneginf(logits[row, :VOCAB][disallowed]).all()
        assert torch.equal(logits[row, :VOCAB][~disallowed], original[row, :VOCAB][~disallowed])
    allowed_done = torch.nonzero(~torch.isneginf(logits[3])).flatten().tolist()
    assert allowed_done == [tokenizer.eos_token_id]  # a finished grammar allows only <|im_end|>
    assert 0 < int((~expected[0]).sum()) < 20  # digits, "," or "}" after '"id": 1'


def test_apply_masks_without_rows_is_a_no_op(compiler: GrammarCompiler) -> None:
    logits = torch.randn(3, VOCAB)
    before = logits.clone()
    apply_masks(logits, [], [])
    assert torch.equal(logits, before)
    with pytest.raises(ValueError):
        apply_masks(logits, [0], [])


def test_thinking_tags_are_plain_text_to_the_grammar(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    """<tool_call> (an added, non-special token) may appear inside a JSON string; control tokens
    such as <|im_start|> never may."""
    matcher = compiler.matcher(compiler.compile(StructuredOutputSpec(json_schema=SCHEMAS["flat"])))
    for token in tokenizer.encode('{"name": "'):
        assert matcher.accept_token(token)
    disallowed = _expected_mask(matcher)
    assert not disallowed[tokenizer.token_to_id("<tool_call>")]
    assert disallowed[tokenizer.token_to_id("<|im_start|>")]


def test_parallel_fill_matches_row_by_row(compiler: GrammarCompiler, tokenizer: Tokenizer) -> None:
    parallel = GrammarCompiler(compiler.ll_tokenizer, VOCAB, num_threads=2)
    assert parallel.executor is not None
    prefixes = ['{"name": "a', '{"name": "ab", "age": 1', "", '{"name": "", "age": -3}']
    matchers = [parallel.matcher(parallel.compile(StructuredOutputSpec(json_schema=SCHEMAS["flat"])))
                for _ in prefixes]
    for matcher, prefix in zip(matchers, prefixes, strict=True):
        for token in tokenizer.encode(prefix):
            assert matcher.accept_token(token)
    logits = torch.zeros(len(prefixes), VOCAB)
    apply_masks(logits, range(len(prefixes)), matchers)
    for row, matcher in enumerate(matchers):
        assert torch.equal(torch.isneginf(logits[row]), _expected_mask(matcher))
