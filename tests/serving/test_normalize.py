"""Range checks, stop lists, feature refusals and SamplingParams construction."""

from __future__ import annotations

import math

import pytest

from dashserve.errors import InvalidRequest, PromptTooLong, UnsupportedFeature
from dashserve.serving.features import resolve_features
from dashserve.serving.normalize import (
    check_extras,
    check_input_length,
    check_ranges,
    sampling_params,
    split_stop,
)
from dashserve.serving.profiles import profile_for
from dashserve.serving.request import GenerationRequest, Message, RequestedParams

PROFILE = profile_for("qwen-plus").fitted(8192)


def request(**kwargs: object) -> GenerationRequest:
    params = kwargs.pop("params", RequestedParams())
    return GenerationRequest("r", "qwen-plus", (Message("user", "hi"),),
                             params=params, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", 1.999), ("temperature", 0.0), ("top_p", 1.0), ("top_p", 1e-6),
    ("top_k", 0), ("top_k", 500), ("presence_penalty", -2.0), ("presence_penalty", 2.0),
    ("seed", 0), ("seed", 2**31 - 1), ("n", 4), ("top_logprobs", 5), ("max_tokens", 8191),
    ("repetition_penalty", 0.01), ("frequency_penalty", -2.0),
])
def test_edges_that_are_allowed(field: str, value: float) -> None:
    check_ranges(RequestedParams(**{field: value}), PROFILE)


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", 2.0), ("temperature", math.nan), ("top_p", 0.0), ("top_p", 1.0001),
    ("presence_penalty", -2.01), ("seed", 2**31), ("n", 0), ("top_logprobs", -1),
    ("max_tokens", 8192), ("repetition_penalty", -1.0), ("max_input_tokens", 8192),
])
def test_out_of_range_names_the_parameter(field: str, value: float) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_ranges(RequestedParams(**{field: value}), PROFILE)
    assert info.value.param == field and field in info.value.message


def test_split_stop() -> None:
    decode = lambda ids: "".join(chr(i) for i in ids)  # noqa: E731
    assert split_stop(None, 200, decode) == ((), ())
    assert split_stop(("a", "b", "a"), 200, decode) == (("a", "b"), ())
    assert split_stop(((5,), (72, 105)), 200, decode) == (("Hi",), (5,))
    for bad in (("a", (5,)), ((500,),), ("",), ((),)):
        with pytest.raises(InvalidRequest):
            split_stop(bad, 200, decode)  # type: ignore[arg-type]


def test_features_now_supported_feed_sampling_params() -> None:
    assert resolve_features(request(response_format={"type": "text"}), PROFILE).structured is None
    plain = resolve_features(request(params=RequestedParams(enable_thinking=False)), PROFILE)
    assert not plain.thinking
    tools = ({"type": "function", "function": {"name": "f"}},)
    feats = resolve_features(request(tools=tools, stream=True, params=RequestedParams(
        enable_thinking=True, thinking_budget=8, n=3)), PROFILE)
    assert feats.thinking and feats.parse_tools and feats.template_tools
    sp = sampling_params(RequestedParams(enable_thinking=True, thinking_budget=8, n=3),
                         PROFILE, 10, ((), ()), feats)
    assert sp.n == 1 and sp.starts_in_thinking and sp.thinking_budget == 8
    for kwargs in ({"tools": ({"type": "function"},)},
                   {"response_format": {"type": "json_object"}},
                   {"response_format": {"type": "yaml"}}):
        with pytest.raises(InvalidRequest):
            resolve_features(request(**kwargs), PROFILE)


def test_extras() -> None:
    check_extras({"enable_search": False, "search_options": {"x": 1}, "modalities": ["text"]})
    # asr_options is read by speech models (serving.asr), not refused here
    check_extras({"asr_options": {"language": "zh"}})
    for extras in ({"enable_code_interpreter": True}, {"modalities": ["audio"]},
                   {"audio": {"voice": "x"}}):
        with pytest.raises(UnsupportedFeature):
            check_extras(extras)


def test_input_length() -> None:
    check_input_length(RequestedParams(), PROFILE, 8191)
    with pytest.raises(PromptTooLong):
        check_input_length(RequestedParams(), PROFILE, 8192)
    with pytest.raises(PromptTooLong) as info:
        check_input_length(RequestedParams(max_input_tokens=10), PROFILE, 11)
    assert "[1, 10]" in info.value.message


def test_sampling_params_defaults_and_clamp() -> None:
    sp = sampling_params(RequestedParams(), PROFILE, 8000, ((), ()))
    assert (sp.temperature, sp.top_p, sp.top_k, sp.seed) == (0.7, 0.8, 20, 1234)
    assert not sp.seed_requested  # the default seed: not the client's choice
    assert sp.max_tokens == 192  # what fits after the prompt
    for seed in (0, 1234, 99):  # a seed the client sent, the default's value included
        sp = sampling_params(RequestedParams(seed=seed), PROFILE, 8000, ((), ()))
        assert (sp.seed, sp.seed_requested) == (seed, True)
    sp = sampling_params(RequestedParams(max_tokens=10, top_logprobs=3), PROFILE, 10, ((), ()))
    assert sp.max_tokens == 10 and sp.top_logprobs == 0  # top_logprobs needs logprobs
    sp = sampling_params(RequestedParams(logprobs=True, top_logprobs=3, temperature=0.0),
                         PROFILE, 10, (("x",), (7,)))
    assert (sp.logprobs, sp.top_logprobs, sp.temperature) == (True, 3, 0.0)
    assert (sp.stop, sp.stop_token_ids) == (("x",), (7,))
