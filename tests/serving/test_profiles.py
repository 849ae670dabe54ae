"""Model-family defaults and their fitting to an engine."""

from __future__ import annotations

import pytest

from dashserve.serving.profiles import profile_for


@pytest.mark.parametrize(("name", "family", "fmt", "incremental"), [
    ("qwen-plus", "qwen-plus", "text", False),
    ("qwen-plus-latest", "qwen-plus", "text", False),
    ("qwen-max", "qwen-max", "text", False),
    ("qwen3-max", "qwen3-max", "message", True),
    ("qwen-flash", "qwen-flash", "text", False),
    ("qwen-turbo", "qwen-turbo", "text", False),
    ("qwen3-0.6b", "qwen3-open", "message", True),
    ("Qwen3-8B", "qwen3-open", "message", True),
    ("qwen3-vl-plus", "qwen3-vl", "message", True),
    ("qwen3-next-80b-a3b-instruct", "qwen3-open", "text", True),
    ("qwen2.5-7b-instruct", "qwen-open", "text", False),
    ("qwen-long", "qwen-long", "message", False),
])
def test_families(name: str, family: str, fmt: str, incremental: bool) -> None:
    profile = profile_for(name)
    assert (profile.family, profile.result_format, profile.incremental_output) == (
        family, fmt, incremental)
    assert profile.sampling.seed == 1234
    assert profile.enable_thinking is False


def test_documented_sampling_defaults() -> None:
    plus = profile_for("qwen-plus").sampling
    assert (plus.temperature, plus.top_p, plus.top_k, plus.repetition_penalty,
            plus.presence_penalty) == (0.7, 0.8, 20, 1.05, 0.0)
    small = profile_for("qwen2.5-0.5b-instruct").sampling
    assert small.repetition_penalty == 1.1
    thinking = profile_for("qwen3-0.6b").thinking
    assert thinking is not None and (thinking.temperature, thinking.top_p) == (0.6, 0.95)


def test_unknown_names_follow_the_architecture() -> None:
    assert profile_for("my-model", "Qwen3ForCausalLM").family == "qwen3-open"
    assert profile_for("my-model", "Qwen2ForCausalLM").family == "qwen-open"


def test_fitted_to_the_engine() -> None:
    profile = profile_for("qwen-plus").fitted(4096)
    assert profile.context_length == 4096
    assert profile.max_output_tokens == 4095 and profile.max_input_tokens == 4095
    big = profile_for("qwen-max").fitted(10**6)
    assert (big.context_length, big.max_output_tokens, big.max_input_tokens) == (
        32_768, 8_192, 30_720)
