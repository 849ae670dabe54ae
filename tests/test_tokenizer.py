"""The rebuilt Qwen3 tokenizer against tiktoken and transformers, and the Tokenizer wrapper."""

from __future__ import annotations

import json
import random
import shutil
import unicodedata
from pathlib import Path

import pytest

from dashserve.errors import InvalidRequest
from dashserve.tokenizer import Tokenizer
from dashserve.tokenizer_build import (
    ADDED_TOKENS,
    FIRST_ADDED_ID,
    QWEN_PATTERN,
    load_ranks,
    tiktoken_path,
)

SAMPLES = {
    "english": "Hello, world! It's a test: we'll see 3 dogs & 42 cats; they're fine. I'd've DONE it.",
    "chinese": "你好，世界！通义千问是阿里云研发的大语言模型。今天天气很好，我们去公园散步吧。",
    "code": "def f(x):\r\n\tif x > 10:\r\n\t\treturn {'a': [1, 2, 3]}\n    # comment\n    return x ** 2  \n\n\n",
    "emoji": "👨‍👩‍👧‍👦 family 👍🏽 thumbs 🇨🇳🇺🇸 flags ❤️‍🔥 ok 🤖",
    "whitespace": "a    b\t\t\tc\n\n\n   \n d  \u00a0 e\u200b f   ",
    "digits": "1234567890 3.14159 1,000,000 2026-11-21 0x1F 12345678901234567890",
    "chat": "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nhmm\n</think>\n\n<tool_call>\n{}\n</tool_call><|endoftext|>",
    "nfc": "cafe\u0301 na\u0308ive A\u030a \uff21\uff22 ﬁ",
    "mixed": '{"名字": "张三", "age": 30, "emoji": "😀", "note": "日本語とEnglish混在"}',
    "scripts": "Привет мир. Γειά σου. مرحبا. नमस्ते. こんにちは. 안녕하세요.",
}

ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    + list(" \t\n\r.,;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~`")
    + list("你好世界中文模型的是了") + list("éèàüöçñ") + ["e\u0301", "a\u0308"]
    + ["😀", "👍🏽", "🇨🇳", "\u200b", "\u00a0", "  ", "\r\n", "'s", "'LL"]
    + ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "<|endoftext|>", "<|im_"]
)


def fuzz_strings(n: int, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def reference():
    tiktoken = pytest.importorskip("tiktoken")
    specials = {content: FIRST_ADDED_ID + i for i, (content, _) in enumerate(ADDED_TOKENS)}
    return tiktoken.Encoding(
        name="qwen3-reference", pat_str=QWEN_PATTERN,
        mergeable_ranks=load_ranks(tiktoken_path()), special_tokens=specials,
    )


@pytest.fixture(scope="module")
def hf_tokenizer(qwen3_tiny_dir: Path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(qwen3_tiny_dir)


def ref_encode(reference, text: str) -> list[int]:
    return reference.encode(unicodedata.normalize("NFC", text), allowed_special="all")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_matches_tiktoken_on_samples(tokenizer: Tokenizer, reference, name: str) -> None:
    text = SAMPLES[name]
    ids = tokenizer.encode(text)
    assert ids == ref_encode(reference, text)
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_matches_tiktoken_on_fuzz(tokenizer: Tokenizer, reference) -> None:
    for text in fuzz_strings(400):
        ids = tokenizer.encode(text)
        assert ids == ref_encode(reference, text), repr(text)
        decoded = tokenizer.decode(ids)
        assert decoded == unicodedata.normalize("NFC", text)
        assert b"".join(tokenizer.token_bytes(i) for i in ids) == decoded.encode("utf-8")


def test_known_ids(tokenizer: Tokenizer) -> None:
    known = {
        "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
        "<tool_call>": 151657, "</tool_call>": 151658, "<think>": 151667, "</think>": 151668,
    }
    for text, token_id in known.items():
        assert tokenizer.token_to_id(text) == token_id
        assert tokenizer.encode(text) == [token_id]
        assert tokenizer.token_bytes(token_id) == text.encode()
    assert tokenizer.encode("你好") == [108386]
    assert tokenizer.encode("\n") == [198]
    assert tokenizer.encode("system user assistant") == [8948, 1196, 17847]
    assert tokenizer.token_to_id("no such token ever") is None


def test_specials_and_sizes(tokenizer: Tokenizer) -> None:
    assert tokenizer.vocab_size == 151669
    assert len(tokenizer.id_to_bytes) == 151936  # padded to the model's vocab_size
    assert tokenizer.special_ids == frozenset(range(151643, 151657))
    assert tokenizer.eos_token_id == 151645
    assert tokenizer.pad_token_id == 151643
    assert tokenizer.bos_token_id is None
    assert tokenizer.stop_token_ids == (151645, 151643)
    assert tokenizer.token_bytes(151700) == b"" and tokenizer.token_bytes(10**7) == b""
    assert tokenizer.token_bytes(-1) == b""
    assert tokenizer.id_to_bytes[220] == b" " and tokenizer.id_to_bytes[198] == b"\n"


def test_token_bytes_split_characters(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("🫠")
    assert len(ids) == 3  # one rare emoji over several byte-level tokens
    assert b"".join(tokenizer.id_to_bytes[i] for i in ids) == "🫠".encode()
    assert "\ufffd" in tokenizer.token_str(ids[0])
    assert tokenizer.token_str(108386) == "你好"
    assert tokenizer.token_str(151667) == "<think>"


def test_decode_skip_special_tokens(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("<|im_start|>assistant\n<think>x</think>hi<|im_end|>")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "assistant\n<think>x</think>hi"
    assert tokenizer.decode(ids) == "<|im_start|>assistant\n<think>x</think>hi<|im_end|>"
    assert tokenizer.decode([9707, 151700]) == "Hello"  # padding ids decode to nothing


def test_built_files_layout(qwen3_tiny_dir: Path) -> None:
    data = json.loads((qwen3_tiny_dir / "tokenizer.json").read_text("utf-8"))
    assert len(data["model"]["merges"]) == 151387
    assert data["model"]["type"] == "BPE" and data["model"]["ignore_merges"] is False
    assert data["normalizer"]["type"] == "NFC"
    split, byte_level = data["pre_tokenizer"]["pretokenizers"]
    assert split["pattern"]["Regex"] == QWEN_PATTERN and byte_level["type"] == "ByteLevel"
    assert [(t["id"], t["content"], t["special"]) for t in data["added_tokens"]] == [
        (FIRST_ADDED_ID + i, c, s) for i, (c, s) in enumerate(ADDED_TOKENS)
    ]
    cfg = json.loads((qwen3_tiny_dir / "tokenizer_config.json").read_text("utf-8"))
    assert cfg["tokenizer_class"] == "Qwen2Tokenizer"
    assert (cfg["eos_token"], cfg["pad_token"], cfg["bos_token"]) == ("<|im_end|>", "<|endoftext|>", None)
    assert cfg["add_bos_token"] is False and cfg["model_max_length"] == 131072
    assert len(cfg["additional_special_tokens"]) == 13
    assert "enable_thinking" in cfg["chat_template"]
    merges = (qwen3_tiny_dir / "merges.txt").read_text("utf-8").splitlines()
    assert len(merges) == 1 + 151387
    assert len(json.loads((qwen3_tiny_dir / "vocab.json").read_text("utf-8"))) == 151643


def test_hf_tokenizer_agrees(tokenizer: Tokenizer, hf_tokenizer) -> None:
    for text in [*SAMPLES.values(), *fuzz_strings(50, seed=7)]:
        assert hf_tokenizer.encode(text, add_special_tokens=False) == tokenizer.encode(text)


# ---- chat template ------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "查询城市天气 (weather for a city)",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "now", "description": "Current time", "parameters": {}}}

TOOL_TURNS = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "北京和上海天气如何？"},
    {
        "role": "assistant", "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "北京"}}},
            {"id": "c2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "上海", "unit": "c"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "晴, 20°C"},
    {"role": "tool", "tool_call_id": "c2", "content": "雨, 18°C"},
    {"role": "assistant", "content": "北京晴天，上海下雨。"},
    {"role": "user", "content": "Thanks! And the time?"},
]

CONVERSATIONS = {
    "system_user": ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}], None, {}),
    "user_no_think": ([{"role": "user", "content": "Hi"}], None, {"enable_thinking": False}),
    "user_think": ([{"role": "user", "content": "Hi"}], None, {"enable_thinking": True}),
    "tools_multi_turn": (TOOL_TURNS, [WEATHER_TOOL, TIME_TOOL], {}),
    "tools_no_system": (TOOL_TURNS[1:], [WEATHER_TOOL], {"enable_thinking": False}),
    "tool_history_no_tools": (TOOL_TURNS, None, {}),
    "reasoning_in_history": ([
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "\nadd them\n"},
        {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "<think>\nsum\n</think>\n\n6"},
        {"role": "user", "content": "Now call the clock."},
        {"role": "assistant", "content": "Calling.", "reasoning_content": "need the time",
         "tool_calls": [{"type": "function", "function": {"name": "now", "arguments": {}}}]},
        {"role": "tool", "content": "12:00"},
    ], [TIME_TOOL], {}),
    "reasoning_alias": ([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning": "r"},
    ], None, {"add_generation_prompt": False}),
    "ends_with_assistant": ([
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
    ], None, {"add_generation_prompt": False}),
    "mid_system": ([
        {"role": "user", "content": "a"}, {"role": "system", "content": "new rules"},
        {"role": "user", "content": "b"},
    ], None, {}),
}


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_chat_template_matches_transformers(tokenizer: Tokenizer, hf_tokenizer, name: str) -> None:
    messages, tools, kwargs = CONVERSATIONS[name]
    kwargs = dict(kwargs)
    add_gen = kwargs.pop("add_generation_prompt", True)
    ours = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=add_gen, **kwargs)
    theirs = hf_tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_gen, tokenize=False, **kwargs)
    assert ours == theirs


def test_chat_template_known_renderings(tokenizer: Tokenizer) -> None:
    hi = [{"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(hi) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.apply_chat_template(hi, enable_thinking=False) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    done = [*hi, {"role": "assistant", "content": "Hello"}]
    assert tokenizer.apply_chat_template(done, add_generation_prompt=False) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello<|im_end|>\n")
    text = tokenizer.apply_chat_template(TOOL_TURNS[:5], tools=[WEATHER_TOOL])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\n")
    assert "<tools>\n" + json.dumps(WEATHER_TOOL, ensure_ascii=False) + "\n</tools>" in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>\n<tool_call>' in text
    assert text.endswith(
        "<|im_start|>user\n<tool_response>\n晴, 20°C\n</tool_response>\n"
        "<tool_response>\n雨, 18°C\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_encodes_with_markup(tokenizer: Tokenizer, hf_tokenizer) -> None:
    text = tokenizer.apply_chat_template(TOOL_TURNS, tools=[WEATHER_TOOL])
    ids = tokenizer.encode(text)
    assert ids[0] == 151644 and ids.count(151657) == 4  # 2 in the tools preamble, 2 calls
    theirs = hf_tokenizer.apply_chat_template(
        TOOL_TURNS, tools=[WEATHER_TOOL], add_generation_prompt=True, tokenize=True)
    assert ids == list(theirs["input_ids"])


def test_chat_template_jinja_file_and_errors(qwen3_tiny_dir: Path, tmp_path: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(qwen3_tiny_dir / name, tmp_path / name)
    (tmp_path / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('no bad roles') }}{% endif %}"
        "[{{ m.role }}|{{ m.content | tojson(indent=1) }}]{% endfor %}{{ eos_token }}")
    tok = Tokenizer.from_dir(tmp_path)
    assert len(tok.id_to_bytes) == tok.vocab_size == 151669  # no config.json: no padding
    assert tok.apply_chat_template([{"role": "user", "content": ["é"]}]) == '[user|[\n "é"\n]]<|im_end|>'
    with pytest.raises(InvalidRequest, match="no bad roles"):
        tok.apply_chat_template([{"role": "bad", "content": "x"}])
    (tmp_path / "chat_template.jinja").unlink()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    bare = Tokenizer.from_dir(tmp_path)
    assert bare.chat_template is None
    with pytest.raises(InvalidRequest):
        bare.apply_chat_template([{"role": "user", "content": "x"}])
