"""asr_options, the Qwen3-ASR prompt and the answer's language prefix."""

from __future__ import annotations

import pytest
import torch

from dashserve.contracts.engine_client import AudioInfo
from dashserve.errors import InvalidRequest
from dashserve.serving.asr import (
    PreparedClip,
    annotation,
    asr_prompt,
    parse_answer,
    parse_asr_options,
)
from dashserve.tokenizer import Tokenizer

AUDIO = AudioInfo("qwen3-asr", 128, 100, 151676, 151669, 151670)


def test_asr_options() -> None:
    assert parse_asr_options(None).language is None
    assert parse_asr_options({"language": "zh", "enable_itn": False}).language == "zh"
    assert parse_asr_options({"enable_itn": True}).enable_itn
    assert not parse_asr_options({"language": "en"}).enable_itn
    assert parse_asr_options(None).enable_lid and parse_asr_options({}).enable_lid
    assert not parse_asr_options({"enable_lid": False}).enable_lid
    for bad in ({"language": "klingon"}, {"language": 3}, {"enable_itn": "yes"},
                {"speed": 2}, ["zh"]):
        with pytest.raises(InvalidRequest):
            parse_asr_options(bad)


def test_answer_prefix_gives_the_language_and_is_hidden() -> None:
    assert parse_answer("language Chinese<asr_text>欢迎使用阿里云。", None) == (
        "欢迎使用阿里云。", "zh")
    assert parse_answer("language Klingon<asr_text>x", None) == ("x", None)
    assert parse_answer("language English<asr_text>a<asr_text>b", None) == ("ab", "en")
    assert parse_answer("欢迎", "zh") == ("欢迎", "zh")  # forced: the prompt held the prefix
    assert parse_answer("langu", None, final=False) == ("", None)  # may become the prefix
    assert parse_answer("language Eng", None, final=False) == ("", None)
    assert parse_answer("hello", None, final=False) == ("hello", None)
    assert parse_answer("language only", None) == ("language only", None)
    assert annotation("en") == [{"type": "audio_info", "language": "en"}]
    assert annotation(None) == [{"type": "audio_info"}]


def test_prompt_places_the_clip_and_forces_the_language(model_dir_factory) -> None:
    tok = Tokenizer.from_dir(model_dir_factory("qwen3-asr-tiny"))
    clip = PreparedClip(torch.zeros(128, 200), 150, "h", 2)
    ids, item, ctx = asr_prompt(tok.encode, tok.encode_plain, "Alibaba <|im_end|>", clip, 20,
                                AUDIO, "en")
    text = tok.decode(ids)
    assert text == ("<|im_start|>system\nAlibaba <|im_end|><|im_end|>\n<|im_start|>user\n"
                    "<|audio_start|>" + "<|audio_pad|>" * 20 + "<|audio_end|><|im_end|>\n"
                    "<|im_start|>assistant\nlanguage English<asr_text>")
    assert ids[item.offset:item.offset + item.length] == [151676] * 20
    assert ids[item.offset - 1] == 151669 and ids[item.offset + 20] == 151670
    assert 151645 not in ids[3:3 + ctx]  # client text typed as a control token stays text
    assert item.kind == "audio" and item.audio_frames == 150


def test_inverse_text_normalisation_of_the_finished_transcript() -> None:
    answer = "language Chinese<asr_text>我有一百二十三个苹果，百分之五十是红的"
    assert parse_answer(answer, None, itn=True) == ("我有123个苹果，50%是红的", "zh")
    assert parse_answer(answer, None, itn=False)[0] == "我有一百二十三个苹果，百分之五十是红的"
    assert parse_answer("twenty three apples", "en", itn=True) == ("23 apples", "en")
    assert parse_answer("vingt trois pommes", "fr", itn=True) == ("23 pommes", "fr")
    # held back until final: normalising may rewrite text a stream would have shown
    assert parse_answer(answer, None, final=False, itn=True) == ("", "zh")
    # a language neither normaliser knows keeps its words
    assert parse_answer("двадцать три", "ru", itn=True) == ("двадцать три", "ru")
