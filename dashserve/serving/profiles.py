"""Per-model-family defaults (sampling, result format, limits), as DashScope documents them.

Defaults come from the parameter reference (temperature, top_p, top_k, repetition_penalty,
presence_penalty, seed, result_format, incremental_output per family); context and output
limits come from the public model list. A served name picks its family by prefix; names
we do not recognise fall back on the checkpoint's architecture (Qwen3 → the Qwen3
open-source family, anything else → the older open-source family). The profile is then
clamped to what the loaded engine can actually hold (``ModelProfile.fitted``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from dashserve.multimodal.image import QWEN3_VL as QWEN3_VL_PIXELS
from dashserve.multimodal.image import QWEN25_VL as QWEN25_VL_PIXELS
from dashserve.multimodal.image import QWEN_VL_LATEST as QWEN_VL_PIXELS
from dashserve.multimodal.image import QWEN_VL_OCR as QWEN_VL_OCR_PIXELS
from dashserve.multimodal.image import PixelSpec

ResultFormat = Literal["text", "message"]


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """Sampling values used when the request leaves them out."""

    temperature: float
    top_p: float
    top_k: int | None
    repetition_penalty: float
    presence_penalty: float
    seed: int | None = 1234


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """What a served model name promises its callers.

    ``max_input_tokens`` is the default input cap, 2,048 tokens short of the context as on
    the public model list (the ``max_input_tokens`` parameter may raise it, up to the
    context). ``thinking`` holds the sampling defaults of thinking
    mode, for families that have one. ``pixels`` is the image pixel budget of vision
    families (None: the checkpoint's family decides); on those ``result_format: "text"``
    has no effect (the answer is a message), and ``tools`` is False where the family takes
    no tools (seed 002: qwen-vl).
    """

    family: str
    context_length: int
    max_output_tokens: int
    max_input_tokens: int
    sampling: SamplingDefaults
    result_format: ResultFormat
    incremental_output: bool
    enable_thinking: bool = False
    thinking: SamplingDefaults | None = None
    pixels: PixelSpec | None = None
    tools: bool = True
    default_output_tokens: int | None = None  # max_tokens when a request sets none (demo)

    def fitted(self, max_model_len: int) -> ModelProfile:
        """This profile limited to an engine whose context is ``max_model_len`` tokens."""
        context = min(self.context_length, max_model_len)
        return replace(
            self,
            context_length=context,
            max_output_tokens=max(1, min(self.max_output_tokens, context - 1)),
            max_input_tokens=max(1, min(self.max_input_tokens, context - 1)),
        )

    def with_default_output(self, tokens: int | None) -> ModelProfile:
        """This profile answering ``tokens`` tokens at most when a request sets no max_tokens."""
        if tokens is None:
            return self
        return replace(self, default_output_tokens=max(1, min(tokens, self.max_output_tokens)))


def _s(t: float, p: float, k: int | None, rep: float, pres: float,
       seed: int | None = 1234) -> SamplingDefaults:
    return SamplingDefaults(temperature=t, top_p=p, top_k=k, repetition_penalty=rep,
                            presence_penalty=pres, seed=seed)


def _profile(family: str, ctx: int, out: int, sampling: SamplingDefaults, fmt: ResultFormat,
             incremental: bool, *, max_in: int | None = None,
             thinking: SamplingDefaults | None = None) -> ModelProfile:
    return ModelProfile(
        family=family, context_length=ctx, max_output_tokens=out,
        max_input_tokens=max_in if max_in is not None else ctx - 2_048, sampling=sampling,
        result_format=fmt, incremental_output=incremental, thinking=thinking,
    )


QWEN3_MAX = _profile("qwen3-max", 262_144, 65_536, _s(0.7, 0.8, 20, 1.05, 0.0), "message", True)
QWEN_MAX = _profile("qwen-max", 32_768, 8_192, _s(0.7, 0.8, 20, 1.0, 1.5), "text", False)
QWEN_PLUS = _profile("qwen-plus", 131_072, 16_384, _s(0.7, 0.8, 20, 1.05, 0.0), "text", False,
                     thinking=_s(0.6, 0.95, 20, 1.05, 0.5))
QWEN_FLASH = _profile("qwen-flash", 1_000_000, 32_768, _s(0.7, 0.8, 20, 1.05, 0.0), "text", False,
                      thinking=_s(0.6, 0.95, 20, 1.05, 0.0))
QWEN_TURBO = _profile("qwen-turbo", 1_000_000, 16_384, _s(0.7, 0.8, 20, 1.05, 0.0), "text", False,
                      thinking=_s(0.6, 0.95, 20, 1.05, 0.5))
QWEN_LONG = _profile("qwen-long", 10_000_000, 8_192, _s(1.0, 0.8, 20, 1.05, 0.0), "message", False)
QWEN3_VL = replace(_profile("qwen3-vl", 262_144, 32_768, _s(0.7, 0.8, 20, 1.0, 1.5), "message",
                            True, thinking=_s(0.8, 0.95, 20, 1.0, 0.0)),
                   pixels=QWEN3_VL_PIXELS)
# qwen-vl-max/plus (seed 003): the "qwen-vl series" sampling, no tools (seed 002).
QWEN_VL_MAX = replace(_profile("qwen-vl-max", 131_072, 8_192,
                               _s(0.01, 0.001, 1, 1.0, 1.5, seed=3407), "message", False),
                      pixels=QWEN_VL_PIXELS, tools=False)
QWEN_VL_PLUS = replace(_profile("qwen-vl-plus", 131_072, 8_192,
                                _s(0.01, 0.001, 1, 1.2, 1.5, seed=None), "message", False),
                       pixels=QWEN_VL_PIXELS, tools=False)
QWEN_VL_PLUS_LATEST = replace(QWEN_VL_PLUS, sampling=_s(0.01, 0.001, 1, 1.0, 1.2, seed=None))
# qwen-vl-ocr (seed 002): repetition_penalty 1.05, answers of at most 4096 tokens (the
# default); context and input from the public model list.
QWEN_VL_OCR = replace(_profile("qwen-vl-ocr", 34_096, 4_096,
                               _s(0.01, 0.001, 1, 1.05, 0.0), "message", False, max_in=30_000),
                      pixels=QWEN_VL_OCR_PIXELS, tools=False)
QWEN25_VL = replace(_profile("qwen2.5-vl", 131_072, 8_192, _s(0.01, 0.001, 20, 1.0, 1.5),
                             "message", False), pixels=QWEN25_VL_PIXELS, tools=False)
QVQ = replace(_profile("qvq", 131_072, 8_192, _s(0.5, 0.5, 10, 1.0, 1.5, seed=3407), "message",
                       True), pixels=QWEN25_VL_PIXELS, tools=False)
# qwen3-asr-flash: seed 003 gives no sampling defaults for speech recognition; near-greedy
# decoding as for the vision families, messages, no tools; context and output of the
# open Qwen3-ASR checkpoints
QWEN3_ASR = replace(_profile("qwen3-asr", 65_536, 8_192, _s(0.01, 0.001, 1, 1.0, 0.0),
                             "message", False), tools=False)
# Audio understanding (seed 003's parameter reference; no tools for the qwen-audio series,
# seed 002; presence_penalty 0.0 for all, "其余均为0.0"; result messages, as for the other
# multimodal families). The seeds give no context or output limits for these: the open
# checkpoints' context stands in (Qwen2-Audio-7B 8,192 positions, Qwen2.5-Omni-7B 32,768).
# qwen2-audio-instruct: temperature 0.7, top_p 0.5, top_k 20 (the "other models" value),
# repetition_penalty 1.1.
QWEN2_AUDIO = replace(_profile("qwen2-audio", 8_192, 2_048, _s(0.7, 0.5, 20, 1.1, 0.0),
                               "message", False, max_in=6_144), tools=False)
# qwen-audio-turbo: temperature 0.00001, top_p 0.8, top_k 1; repetition_penalty 1.0 for
# qwen-audio-turbo-latest and -2024-12-04, the "other models" 1.05 for the rest
QWEN_AUDIO_TURBO = replace(_profile("qwen-audio-turbo", 8_192, 2_048,
                                    _s(0.00001, 0.8, 1, 1.05, 0.0), "message", False,
                                    max_in=6_144), tools=False)
QWEN_AUDIO_TURBO_LATEST = replace(QWEN_AUDIO_TURBO, sampling=_s(0.00001, 0.8, 1, 1.0, 0.0))
# qwen2.5-omni-7b: temperature 0.01, top_k 1, repetition_penalty 1.1; the seed's top_p list
# does not name it: the open series' ("qwen开源系列") 0.8. Audio output stays refused (the
# seeds define no parameter for it).
QWEN25_OMNI = replace(_profile("qwen2.5-omni", 32_768, 2_048, _s(0.01, 0.8, 1, 1.1, 0.0),
                               "message", False), tools=False)
QWEN3_SMALL = _profile("qwen3-open", 32_768, 8_192, _s(0.7, 0.8, 20, 1.05, 1.5), "message", True,
                       thinking=_s(0.6, 0.95, 20, 1.05, 1.5))
QWEN3_OPEN = _profile("qwen3-open", 131_072, 8_192, _s(0.7, 0.8, 20, 1.05, 1.5), "message", True,
                      thinking=_s(0.6, 0.95, 20, 1.05, 0.5))
QWEN3_NEXT_INSTRUCT = replace(QWEN3_OPEN, result_format="text")
QWEN_OPEN_SMALL = _profile("qwen-open", 32_768, 8_192, _s(0.7, 0.8, 20, 1.1, 0.0), "text", False)
QWEN_OPEN = _profile("qwen-open", 131_072, 8_192, _s(0.7, 0.8, 20, 1.05, 0.0), "text", False)

# First match wins; patterns are matched against the lower-cased served name.
_FAMILIES: tuple[tuple[str, ModelProfile], ...] = (
    (r"qwen3-asr", QWEN3_ASR),  # speech recognition
    (r"qwen2-audio", QWEN2_AUDIO),  # audio understanding, before the qwen2 open family
    (r"qwen-audio-turbo-(latest|2024-12-04)", QWEN_AUDIO_TURBO_LATEST),
    (r"qwen-audio-turbo", QWEN_AUDIO_TURBO),
    (r"qwen2\.5-omni", QWEN25_OMNI),
    (r"qwen3-vl", QWEN3_VL),  # vision families first
    (r"qwen-vl-ocr", QWEN_VL_OCR),
    (r"qwen-vl-max", QWEN_VL_MAX),
    (r"qwen-vl-plus-latest", QWEN_VL_PLUS_LATEST),
    (r"qwen-vl-plus", QWEN_VL_PLUS),
    (r"qwen2(\.5)?-vl-", QWEN25_VL),
    (r"qvq", QVQ),
    (r"qwen3-max", QWEN3_MAX),
    (r"qwen-max", QWEN_MAX),
    (r"qwen-plus", QWEN_PLUS),
    (r"qwen-flash", QWEN_FLASH),
    (r"qwen-turbo", QWEN_TURBO),
    (r"qwen-long", QWEN_LONG),
    (r"qwen3-next-80b-a3b-instruct", QWEN3_NEXT_INSTRUCT),
    (r"qwen3-(0\.6|1\.7|4)b", QWEN3_SMALL),
    (r"qwen3-", QWEN3_OPEN),
    (r"qwen2(\.5)?-(0\.5|1\.5)b", QWEN_OPEN_SMALL),
    (r"qwen2(\.5)?-", QWEN_OPEN),
)


def profile_for(served_name: str, architecture: str = "") -> ModelProfile:
    """The profile of ``served_name`` (not yet fitted to an engine)."""
    name = served_name.lower()
    for pattern, profile in _FAMILIES:
        if re.match(pattern, name):
            return profile
    if architecture == "Qwen3ASRForConditionalGeneration":
        return QWEN3_ASR
    if architecture.startswith("Qwen3"):
        return QWEN3_OPEN
    return QWEN_OPEN
