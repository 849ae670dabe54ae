"""Speech recognition (Qwen3-ASR models): ``asr_options``, the prompt, the clip's features
and the answer's ``audio_info`` annotation.

The prompt is Qwen3-ASR's own: the system turn holds the caller's system text as recognition
context, the user turn the clip (``<|audio_start|>``, one ``<|audio_pad|>`` per encoder row,
``<|audio_end|>``), and the assistant turn starts with ``language <Name><asr_text>`` when
``asr_options.language`` forces the language. Otherwise the model writes that prefix itself
(``ASR_GRAMMAR`` keeps it well formed) and ``parse_answer`` reads the language from it; the
prefix never reaches the caller.
``enable_itn: true`` (inverse text normalisation) runs on the finished transcript: numbers,
dates, percentages and the like written as words become digits (``cn2an`` for Chinese and
Cantonese, ``text2num`` for English, French, Spanish, Portuguese, German, Italian, Dutch and
Danish; other languages keep their words). A stream holds the transcript back until it is
final, since normalising can rewrite text already seen.

Audio understanding (Qwen2-Audio models, served e.g. as qwen2-audio-instruct) is a chat: the
model's chat template writes each clip as ``<|audio_bos|><|AUDIO|><|audio_eos|>`` and
``place_audio`` widens each ``<|AUDIO|>`` to the clip's encoder rows; clips last at most the
encoder's 30 s window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import torch

from dashserve.contracts.audio_tokens import audio_token_count
from dashserve.contracts.engine_client import AudioInfo
from dashserve.contracts.multimodal import MultiModalInput
from dashserve.errors import InvalidRequest
from dashserve.media.sources import MediaConfig, load_media
from dashserve.multimodal.audio import audio_hash, billed_seconds, decode_audio, log_mel
from dashserve.serving.request import AudioPart, GenerationRequest

ASR_TEXT = "<asr_text>"
MAX_CLIPS_PER_REQUEST = 1  # one recording per recognition request
MAX_CHAT_CLIPS = 8  # clips one audio-understanding request may hold
QWEN2_AUDIO_MAX_S = 30.0  # Qwen2-Audio's encoder window
# asr_options.language codes and the language names Qwen3-ASR writes and reads
LANGUAGES: dict[str, str] = {
    "zh": "Chinese", "yue": "Cantonese", "en": "English", "ja": "Japanese", "ko": "Korean",
    "de": "German", "fr": "French", "es": "Spanish", "pt": "Portuguese", "it": "Italian",
    "ru": "Russian", "ar": "Arabic", "hi": "Hindi", "id": "Indonesian", "th": "Thai",
    "tr": "Turkish", "vi": "Vietnamese", "ms": "Malay", "nl": "Dutch", "sv": "Swedish",
    "da": "Danish", "fi": "Finnish", "pl": "Polish", "cs": "Czech", "fil": "Filipino",
    "fa": "Persian", "el": "Greek", "hu": "Hungarian", "mk": "Macedonian", "ro": "Romanian",
}
CODES = {name.lower(): code for code, name in LANGUAGES.items()}


# Without a forced language the answer must open with "language <Name><asr_text>", as
# Qwen3-ASR's answers do: the grammar keeps it to that shape (and to a language we can
# report) whatever the weights; the transcript after it is free.
ASR_GRAMMAR = (
    'start: "language " ('
    + " | ".join(f'"{name}"' for name in LANGUAGES.values())
    + f') "{ASR_TEXT}" TEXT\nTEXT: /(.|\\n)*/'
)


@dataclass(frozen=True, slots=True)
class AsrOptions:
    language: str | None = None  # a code of LANGUAGES, forcing the language
    enable_itn: bool = False  # inverse text normalisation of the transcript
    enable_lid: bool = True  # the answer's audio_info names the language


def parse_asr_options(value: Any) -> AsrOptions:
    """``asr_options`` checked: ``language`` a known code, ``enable_itn`` and
    ``enable_lid`` booleans."""
    if value is None:
        return AsrOptions()
    if not isinstance(value, dict):
        raise InvalidRequest("asr_options must be an object", param="asr_options")
    for key in value:
        if key not in ("language", "enable_itn", "enable_lid"):
            raise InvalidRequest(f"asr_options.{key} is not a known option",
                                 param=f"asr_options.{key}")
    for key in ("enable_itn", "enable_lid"):
        if key in value and not isinstance(value[key], bool):
            raise InvalidRequest(f"asr_options.{key} must be a boolean",
                                 param=f"asr_options.{key}")
    language = value.get("language")
    if language is not None and (not isinstance(language, str) or language not in LANGUAGES):
        raise InvalidRequest(f"asr_options.language must be one of {', '.join(LANGUAGES)}",
                             param="asr_options.language")
    return AsrOptions(language, value.get("enable_itn", False), value.get("enable_lid", True))


@dataclass(frozen=True, slots=True)
class AsrPlan:
    """A speech request as planned: what its usage and its answer need (audio
    understanding: the placeholder tokens alone, no seconds, context or language)."""

    audio_tokens: int  # the clips' placeholder tokens
    seconds: int  # usage.seconds
    context_tokens: int  # the recognition context's tokens
    language: str | None  # the forced language code (asr_options.language)


@dataclass(frozen=True, slots=True)
class PreparedClip:
    """One decoded clip: its features, real frames, content hash and billed seconds."""

    features: torch.Tensor
    frames: int
    content_hash: str
    seconds: int


def is_chat_audio(audio: AudioInfo | None) -> bool:
    """Whether the model understands audio in a chat (Qwen2-Audio) rather than
    transcribing it (Qwen3-ASR)."""
    return audio is not None and audio.family == "qwen2-audio"


def _process(data: bytes, where: str, audio: AudioInfo) -> PreparedClip:
    if is_chat_audio(audio):  # Whisper's extractor: one 30 s window, no minimum length
        decoded = decode_audio(data, where, max_duration_s=QWEN2_AUDIO_MAX_S)
        feats, frames = log_mel(decoded.samples, audio.num_mel_bins, audio.chunk_frames,
                                min_samples=0)
        return PreparedClip(feats, frames, audio_hash(decoded.samples),
                            billed_seconds(decoded.duration_s))
    decoded = decode_audio(data, where)
    feats, frames = log_mel(decoded.samples, audio.num_mel_bins, audio.chunk_frames)
    return PreparedClip(feats, frames, audio_hash(decoded.samples),
                        billed_seconds(decoded.duration_s))


def check_audio(request: GenerationRequest, audio: AudioInfo | None) -> None:
    """Refuse what can be refused before a clip is read."""
    parts = request.audios
    if audio is None:
        if parts:
            raise InvalidRequest(f"the model {request.model!r} does not accept audio",
                                 param=parts[0].where)
        if request.asr_options is not None:
            raise InvalidRequest(f"asr_options applies to speech recognition models, not "
                                 f"{request.model!r}", param="asr_options")
        return
    if is_chat_audio(audio):
        _check_chat_audio(request, parts)
        return
    parse_asr_options(request.asr_options)
    if not parts:
        raise InvalidRequest("a speech recognition request needs an audio part in its user "
                             "message", param="messages")
    if len(parts) > MAX_CLIPS_PER_REQUEST:
        raise InvalidRequest(f"a request may hold at most {MAX_CLIPS_PER_REQUEST} audio clip; "
                             f"got {len(parts)}", param=parts[1].where)
    if request.images or request.videos:
        raise InvalidRequest("speech recognition models read audio only, not images or "
                             "videos", param="messages")


def _check_chat_audio(request: GenerationRequest, parts: Sequence[AudioPart]) -> None:
    """An audio-understanding request: one clip at least (seed 003: ``audio`` is required
    for these models), a few at most, no images or videos, no asr_options."""
    if request.asr_options is not None:
        raise InvalidRequest(f"asr_options applies to speech recognition models, not "
                             f"{request.model!r}", param="asr_options")
    if not parts:
        raise InvalidRequest(f"the audio model {request.model!r} needs an audio part in a user "
                             "message", param="messages")
    if len(parts) > MAX_CHAT_CLIPS:
        raise InvalidRequest(f"a request may hold at most {MAX_CHAT_CLIPS} audio clips; got "
                             f"{len(parts)}", param=parts[MAX_CHAT_CLIPS].where)
    if request.images or request.videos:
        raise InvalidRequest("audio models read audio and text, not images or videos",
                             param="messages")


def place_audio(template_ids: Sequence[int], clips: Sequence[PreparedClip],
                audio: AudioInfo) -> tuple[list[int], tuple[MultiModalInput, ...], int]:
    """The prompt with the template's one ``<|AUDIO|>`` per clip widened to the clip's
    encoder rows (none while the clips are not read yet), the clips placed in it, and
    their placeholder tokens."""
    ids: list[int] = []
    items: list[MultiModalInput] = []
    seen = 0
    for tok in template_ids:
        if tok != audio.audio_token_id:
            ids.append(tok)
            continue
        if seen < len(clips):
            clip = clips[seen]
            n = audio_token_count(clip.frames, audio.chunk_frames, audio.family)
            items.append(MultiModalInput(
                kind="audio", pixel_values=clip.features, grid_thw=(0, 0, 0),
                content_hash=clip.content_hash, offset=len(ids), length=n,
                audio_frames=clip.frames))
            ids.extend([audio.audio_token_id] * n)
        seen += 1
    if clips and seen != len(clips):
        raise InvalidRequest(f"the prompt places {seen} audio clips, the request sends "
                             f"{len(clips)}", param="messages")
    return ids, tuple(items), sum(it.length for it in items)


async def prepare_audio(request: GenerationRequest, audio: AudioInfo | None,
                        workspace: str | None, config: MediaConfig,
                        executor: Executor) -> tuple[PreparedClip, ...]:
    """The request's clips, fetched (URL, data URL, oss:// upload) and decoded off the loop."""
    check_audio(request, audio)
    if audio is None:
        return ()
    parts: Sequence[AudioPart] = request.audios
    datas = await asyncio.gather(*(
        load_media(p.source, p.where, config, workspace=workspace,
                   resolve_oss=request.resolve_oss) for p in parts))
    loop = asyncio.get_running_loop()
    return tuple(await asyncio.gather(*(
        loop.run_in_executor(executor, _process, data, part.where, audio)
        for data, part in zip(datas, parts, strict=True))))


def context_text(request: GenerationRequest) -> str:
    """The recognition context: the system turns' text."""
    return "".join(m.content for m in request.messages if m.role == "system")


def asr_prompt(encode: Callable[[str], list[int]], encode_plain: Callable[[str], list[int]],
               context: str, clip: PreparedClip, num_tokens: int, audio: AudioInfo,
               language: str | None) -> tuple[list[int], MultiModalInput, int]:
    """Prompt ids (``encode`` for the prompt's own control tokens, ``encode_plain`` for the
    caller's context), the clip placed in them, and the context's token count."""
    context_ids = encode_plain(context) if context else []
    head = encode("<|im_start|>system\n") + context_ids + encode(
        "<|im_end|>\n<|im_start|>user\n") + [audio.audio_start_token_id]
    tail = [audio.audio_end_token_id] + encode("<|im_end|>\n<|im_start|>assistant\n")
    if language is not None:
        tail += encode(f"language {LANGUAGES[language]}{ASR_TEXT}")
    item = MultiModalInput(kind="audio", pixel_values=clip.features, grid_thw=(0, 0, 0),
                           content_hash=clip.content_hash, offset=len(head), length=num_tokens,
                           audio_frames=clip.frames)
    return head + [audio.audio_token_id] * num_tokens + tail, item, len(context_ids)


def parse_answer(text: str, forced: str | None, final: bool = True,
                 itn: bool = False) -> tuple[str, str | None]:
    """(transcript, language code) of an answer: the transcript follows the first
    ``<asr_text>`` (a later one is format, not transcript, and is dropped); the language is
    the forced one, else the one the model named before ``<asr_text>`` (None when it named
    none we know). Unfinished (``final`` false), an answer still inside a ``language ...``
    prefix shows nothing yet, nor does any answer to be normalised (``itn``)."""
    transcript, language = _split_answer(text, forced, final)
    if itn:
        return (inverse_normalize(transcript, language) if final else ""), language
    return transcript, language


def _split_answer(text: str, forced: str | None, final: bool) -> tuple[str, str | None]:
    if forced is not None:
        return text.replace(ASR_TEXT, ""), forced
    head, sep, rest = text.partition(ASR_TEXT)
    if sep:
        name = head.strip().removeprefix("language").strip().lower()
        return rest.replace(ASR_TEXT, ""), CODES.get(name)
    if not final and ("language".startswith(text) or text.startswith("language")):
        return "", None
    return text, None


def inverse_normalize(text: str, language: str | None) -> str:
    """Numbers and the like written as words, as digits, in ``language`` (a code of
    LANGUAGES; None: the transcript's script decides between Chinese and English).
    Languages neither library knows keep their words."""
    if language is None:
        language = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"
    if language in ("zh", "yue"):
        import cn2an

        return str(cn2an.transform(text, "cn2an"))
    from text_to_num import alpha2digit

    try:
        return str(alpha2digit(text, language))
    except ValueError:  # a language text2num does not support
        return text


def annotation(language: str | None) -> list[dict[str, Any]]:
    """``message.annotations`` of a recognition answer (no emotion: the model gives none)."""
    info: dict[str, Any] = {"type": "audio_info"}
    if language is not None:
        info["language"] = language
    return [info]
