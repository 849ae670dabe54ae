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


@pytest.mark.parametrize(("name", "family", "sampling"), [
    # seed 003: (temperature, top_p, top_k, repetition_penalty, presence_penalty)
    ("qwen2-audio-instruct", "qwen2-audio", (0.7, 0.5, 20, 1.1, 0.0)),
    ("qwen-audio-turbo", "qwen-audio-turbo", (0.00001, 0.8, 1, 1.05, 0.0)),
    ("qwen-audio-turbo-latest", "qwen-audio-turbo", (0.00001, 0.8, 1, 1.0, 0.0)),
    ("qwen-audio-turbo-2024-12-04", "qwen-audio-turbo", (0.00001, 0.8, 1, 1.0, 0.0)),
    ("qwen2.5-omni-7b", "qwen2.5-omni", (0.01, 0.8, 1, 1.1, 0.0)),
])
def test_audio_families(name: str, family: str,
                        sampling: tuple[float, float, int, float, float]) -> None:
    profile = profile_for(name)
    s = profile.sampling
    assert profile.family == family and profile.result_format == "message"
    assert (s.temperature, s.top_p, s.top_k, s.repetition_penalty, s.presence_penalty) == \
        sampling
    assert profile.tools is False  # seed 002: no tools for the qwen-audio series


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
