"""Defaults and checks shared by both APIs: requested values + model profile → SamplingParams.

Ranges follow DashScope's parameter reference: temperature [0, 2), top_p (0, 1],
top_k >= 0 (0, None or > 100 disable it), repetition_penalty > 0, presence_penalty
[-2, 2], seed [0, 2^31 - 1], n 1..4, top_logprobs 0..5, max_tokens 1..the model's
maximum output. Every failure names the offending parameter. Features we do not offer
are refused with a 400 instead of being ignored; tools, structured output and thinking
are checked in ``serving.features``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from dashserve.contracts.params import SamplingParams
from dashserve.errors import InvalidRequest, PromptTooLong, UnsupportedFeature
from dashserve.serving.features import ChatFeatures, thinking_enabled
from dashserve.serving.profiles import ModelProfile
from dashserve.serving.request import RequestedParams, StopItem

SEED_MAX = 2**31 - 1

# Parameters whose truthy value asks for a feature this server does not have.
_UNSUPPORTED_EXTRAS: Mapping[str, str] = MappingProxyType({
    "enable_code_interpreter": "the code interpreter is not available on this server",
    "translation_options": "translation (translation_options) is not available on this server",
    "output_format": "deep-research reports (output_format) are not available on this server",
    "logit_bias": "logit_bias is not supported by this server",
    "audio": "audio output is not available on this server",
})


# the parameters ``check_extras`` reads
EXTRA_NAMES = (*_UNSUPPORTED_EXTRAS, "modalities")


def check_extras(values: Mapping[str, Any]) -> None:
    """Refuse documented parameters that ask for a feature we do not have (``values``: the
    request's values of ``EXTRA_NAMES``, given or not)."""
    for name, reason in _UNSUPPORTED_EXTRAS.items():
        if values.get(name):
            raise UnsupportedFeature(reason, param=name)
    modalities = values.get("modalities")
    if modalities and any(m != "text" for m in modalities):
        raise UnsupportedFeature("audio output is not available on this server; only text",
                                 param="modalities")


def _range(ok: bool, param: str, bounds: str) -> None:
    if not ok:
        raise InvalidRequest(f"Range of {param} should be {bounds}", param=param)


def check_ranges(p: RequestedParams, profile: ModelProfile) -> None:
    """Validate every given value against DashScope's documented range (NaN never fits)."""
    if p.temperature is not None:
        _range(0.0 <= p.temperature < 2.0, "temperature", "[0.0, 2.0)")
    if p.top_p is not None:
        _range(0.0 < p.top_p <= 1.0, "top_p", "(0.0, 1.0]")
    if p.top_k is not None:
        _range(p.top_k >= 0, "top_k", "[0, +inf) (0, null or above 100 disable top_k)")
    if p.repetition_penalty is not None:
        _range(p.repetition_penalty > 0.0, "repetition_penalty", "(0.0, +inf)")
    if p.presence_penalty is not None:
        _range(-2.0 <= p.presence_penalty <= 2.0, "presence_penalty", "[-2.0, 2.0]")
    if p.frequency_penalty is not None:
        _range(-2.0 <= p.frequency_penalty <= 2.0, "frequency_penalty", "[-2.0, 2.0]")
    if p.seed is not None:
        _range(0 <= p.seed <= SEED_MAX, "seed", f"[0, {SEED_MAX}]")
    if p.n is not None:
        _range(1 <= p.n <= 4, "n", "[1, 4]")
    if p.top_logprobs is not None:
        _range(0 <= p.top_logprobs <= 5, "top_logprobs", "[0, 5]")
    if p.max_tokens is not None:
        _range(1 <= p.max_tokens <= profile.max_output_tokens, "max_tokens",
               f"[1, {profile.max_output_tokens}]")
    if p.max_input_tokens is not None:
        _range(1 <= p.max_input_tokens <= profile.context_length - 1, "max_input_tokens",
               f"[1, {profile.context_length - 1}]")
    if p.thinking_budget is not None:
        _range(p.thinking_budget >= 1, "thinking_budget", "[1, +inf)")


def split_stop(stop: tuple[StopItem, ...] | None, vocab_size: int,
               decode: Any) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Stop strings and stop token ids from the client's list.

    A single token id (or a one-id sequence) becomes a stop token; a longer id sequence
    is matched as the text it decodes to. Strings and ids may not be mixed.
    """
    if not stop:
        return (), ()
    kinds = {isinstance(item, str) for item in stop}
    if len(kinds) > 1:
        raise InvalidRequest("stop may hold strings or token ids, not both", param="stop")
    strings: list[str] = []
    ids: list[int] = []
    for item in stop:
        if isinstance(item, str):
            if not item:
                raise InvalidRequest("stop strings must not be empty", param="stop")
            strings.append(item)
            continue
        if not item or any(not 0 <= t < vocab_size for t in item):
            raise InvalidRequest(f"stop token ids must be in [0, {vocab_size})", param="stop")
        if len(item) == 1:
            ids.append(item[0])
        else:
            strings.append(decode(list(item)))
    return tuple(dict.fromkeys(strings)), tuple(dict.fromkeys(ids))


def check_input_length(p: RequestedParams, profile: ModelProfile, num_prompt_tokens: int) -> None:
    """The prompt must fit ``max_input_tokens`` and leave room for one output token."""
    limit = p.max_input_tokens if p.max_input_tokens is not None else profile.max_input_tokens
    limit = min(limit, profile.context_length - 1)
    if not 1 <= num_prompt_tokens <= limit:
        raise PromptTooLong(
            f"Range of input length should be [1, {limit}]; the input has "
            f"{num_prompt_tokens} tokens", param="input")


def sampling_params(p: RequestedParams, profile: ModelProfile, num_prompt_tokens: int,
                    stop: tuple[tuple[str, ...], tuple[int, ...]],
                    features: ChatFeatures | None = None) -> SamplingParams:
    """Requested values over the profile's defaults; ``max_tokens`` clamped to what fits.

    With tools ``n`` is always 1; in thinking mode the prompt opens the thinking block.
    """
    features = features or ChatFeatures(thinking_enabled(p.enable_thinking, profile))
    thinking = features.thinking
    d = profile.thinking if thinking and profile.thinking else profile.sampling
    room = profile.context_length - num_prompt_tokens
    max_tokens = min(p.max_tokens or profile.default_output_tokens or profile.max_output_tokens,
                     room)
    logprobs = bool(p.logprobs)
    # SamplingParams raises InvalidRequest for a range we did not check here
    return SamplingParams(
        temperature=d.temperature if p.temperature is None else p.temperature,
        top_p=d.top_p if p.top_p is None else p.top_p,
        top_k=d.top_k if p.top_k is None else p.top_k,
        repetition_penalty=(d.repetition_penalty if p.repetition_penalty is None
                            else p.repetition_penalty),
        presence_penalty=(d.presence_penalty if p.presence_penalty is None
                          else p.presence_penalty),
        frequency_penalty=p.frequency_penalty or 0.0,
        seed=d.seed if p.seed is None else p.seed,
        seed_requested=p.seed is not None,
        max_tokens=max_tokens,
        stop=stop[0],
        stop_token_ids=stop[1],
        n=1 if features.template_tools else (p.n or 1),
        logprobs=logprobs,
        top_logprobs=(p.top_logprobs or 0) if logprobs else 0,
        thinking_budget=p.thinking_budget if thinking else None,
        starts_in_thinking=thinking,
        structured=features.structured,
    )
