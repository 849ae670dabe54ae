"""The seed's qwen3-asr-flash example end to end: the qwen3-asr-tiny preset (random weights)
served as qwen3-asr-flash behind a live server, its recording served from loopback, driven
by the dashscope SDK; the audio formats PyAV reads; and bad audio refused with DashScope's
400 before anything is admitted or billed."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from dashserve.engine.async_engine import AsyncEngine
from tests.integration.conftest import API_KEY, LiveServer, start_server
from tests.utils.audio import encode, tone
from tests.utils.media_server import MediaServer, media_server
from tests.utils.sdk import dashscope_at

WELCOME = "/audios/welcome.mp3"
GENERATION = "/api/v1/services/aigc/multimodal-generation/generation"


@pytest.fixture(scope="module")
def audio_host() -> Iterator[MediaServer]:
    with media_server() as s:
        s.routes[WELCOME] = (encode(tone(1.6, seed=7), "mp3"), "audio/mpeg")
        s.routes["/audios/corrupt.mp3"] = (b"ID3\x03\x00" + bytes(range(256)) * 8, "audio/mpeg")
        s.routes["/audios/silence.wav"] = (encode(np.zeros(16000, np.float32), "wav"),
                                           "audio/wav")
        s.routes["/audios/empty.wav"] = (b"", "audio/wav")
        s.routes["/audios/long.wav"] = (encode(tone(181.0), "wav"), "audio/wav")
        yield s


@pytest.fixture(scope="module")
def asr_live(model_dir_factory: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[LiveServer]:
    asr = AsyncEngine.from_pretrained(str(model_dir_factory("qwen3-asr-tiny")), dtype="fp32",
                                      max_model_len=2048)
    text = AsyncEngine.from_pretrained(str(model_dir_factory("qwen3-tiny")), dtype="fp32",
                                       max_model_len=2048)
    server = start_server({"qwen3-asr-flash": asr, "qwen-plus": text},  # type: ignore[dict-item]
                          data_dir=tmp_path_factory.mktemp("data"), media_allow_loopback=True)
    yield server
    server.stop()


def sdk_call(server: LiveServer, messages: list[dict[str, Any]], **params: Any) -> Any:

    with dashscope_at(server.native_url) as sdk:
        r = sdk.MultiModalConversation.call(
            model=params.pop("model", "qwen3-asr-flash"), messages=messages, api_key=API_KEY,
            result_format="message", **params)
        if params.get("stream"):
            chunks = list(r)
            assert all(c.status_code == 200 for c in chunks), chunks[-1]
            return chunks
        return r


def seed_messages(url: str, context: str = "") -> list[dict[str, Any]]:
    return [{"role": "system", "content": [{"text": context}]},
            {"role": "user", "content": [{"audio": url}]}]


def test_seed_example_with_enable_itn_answers_the_normalised_transcript(
        asr_live: LiveServer, audio_host: MediaServer) -> None:
    """The seed's own call (enable_itn true): 200, audio_info with a language, seconds; its
    transcript is the plain answer's, normalised; a stream shows it whole at the end."""
    from dashserve.serving.asr import inverse_normalize

    url = audio_host.url(WELCOME)
    runs = {}
    for itn in (False, True):
        r = sdk_call(asr_live, seed_messages(url), asr_options={"enable_itn": itn},
                     max_tokens=12, top_k=1, seed=5)
        assert r.status_code == 200, r
        info = r.output.choices[0].message.annotations[0]
        assert info["type"] == "audio_info" and info["language"]
        assert r.usage["seconds"] == 2
        (part,) = r.output.choices[0].message.content or [{"text": ""}]
        runs[itn] = (part["text"], info["language"])
    plain, language = runs[False]
    assert runs[True] == (inverse_normalize(plain, language), language)
    chunks = sdk_call(asr_live, seed_messages(url), asr_options={"enable_itn": True},
                      max_tokens=12, top_k=1, seed=5, stream=True, incremental_output=True)
    texts = ["".join(p.get("text", "") for p in c.output.choices[0].message.content)
             for c in chunks]
    assert not any(texts[:-1]) and texts[-1] == runs[True][0]


@pytest.mark.parametrize("language", ["zh", None])
def test_seed_example_answers_a_transcript_with_audio_info(
        asr_live: LiveServer, audio_host: MediaServer, language: str | None) -> None:
    options: dict[str, Any] = {"enable_itn": False}
    if language:
        options["language"] = language
    r = sdk_call(asr_live, seed_messages(audio_host.url(WELCOME), "阿里云"), asr_options=options,
                 max_tokens=6)
    assert r.status_code == 200, r
    message = r.output.choices[0].message
    info = message.annotations[0]
    assert info["type"] == "audio_info" and "emotion" not in info
    if language:
        assert info["language"] == "zh"
    else:  # the grammar keeps the model's language prefix well formed: one we know
        from dashserve.serving.asr import LANGUAGES

        assert info["language"] in LANGUAGES
    assert isinstance(message.content, list)
    assert {"input_tokens_details", "output_tokens_details", "seconds"} <= set(r.usage)
    assert r.usage["seconds"] == 2  # 1.6 s decoded, rounded up
    assert r.usage["input_tokens_details"]["text_tokens"] == 2  # "阿里云" as context
    assert 1 <= r.usage["output_tokens_details"]["text_tokens"] <= 6
    record = asr_live.gate.records_for(r.request_id)
    assert record and record[0].output_tokens == r.usage["output_tokens_details"]["text_tokens"]


def test_forced_language_is_written_into_the_prompt(asr_live: LiveServer,
                                                    audio_host: MediaServer) -> None:
    from dashserve.serving.request import AudioPart, GenerationRequest, Message

    service = asr_live.app.state.service
    plans = {}
    for language in (None, "en"):
        request = GenerationRequest(
            request_id=f"p-{language}", model="qwen3-asr-flash",
            messages=(Message("system", "ctx"), Message("user", "", parts=(
                AudioPart(audio_host.url(WELCOME), "input.messages[1].content[0]"),))),
            asr_options={"language": language} if language else None)
        plans[language] = service.plan(request)
    tokenizer = plans[None].served.engine.tokenizer
    base = list(plans[None].prompt_token_ids)
    forced = list(plans["en"].prompt_token_ids)
    assert forced[:len(base)] == base
    assert tokenizer.decode(forced[len(base):]) == "language English<asr_text>"
    assert tokenizer.decode(base[-5:]) == "<|im_end|>\n<|im_start|>assistant\n"


def test_stream_carries_the_transcript_and_the_annotation(asr_live: LiveServer,
                                                          audio_host: MediaServer) -> None:
    chunks = sdk_call(asr_live, seed_messages(audio_host.url(WELCOME)),
                      asr_options={"language": "en"}, stream=True, incremental_output=True,
                      max_tokens=4)
    last = chunks[-1]
    assert last.output.choices[0].finish_reason == "length"
    assert last.output.choices[0].message.annotations[0] == {"type": "audio_info",
                                                             "language": "en"}
    assert last.usage["seconds"] == 2


def test_stream_never_shows_the_language_prefix(asr_live: LiveServer,
                                                 audio_host: MediaServer) -> None:
    from dashserve.serving.asr import LANGUAGES

    chunks = sdk_call(asr_live, seed_messages(audio_host.url(WELCOME)), stream=True,
                      incremental_output=True, max_tokens=8)
    text = "".join(part.get("text", "") for c in chunks
                   for part in c.output.choices[0].message.content)
    assert "<asr_text>" not in text and not text.startswith("language")
    info = chunks[-1].output.choices[0].message.annotations[0]
    assert info["type"] == "audio_info" and info["language"] in LANGUAGES
    whole = sdk_call(asr_live, seed_messages(audio_host.url(WELCOME)), max_tokens=8)
    assert whole.output.choices[0].message.content == ([{"text": text}] if text else [])


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "m4a"])
def test_audio_formats_decode_as_data_urls(asr_live: LiveServer, fmt: str) -> None:
    data = base64.b64encode(encode(tone(1.2, seed=3), fmt)).decode()
    r = sdk_call(asr_live, seed_messages(f"data:audio/{fmt};base64,{data}"),
                 asr_options={"language": "en"}, max_tokens=2)
    assert r.status_code == 200, r
    assert r.usage["seconds"] == 2


def post(server: LiveServer, model: str, audio: str) -> httpx.Response:
    body = {"model": model, "input": {"messages": [
        {"role": "user", "content": [{"audio": audio}]}]}, "parameters": {"max_tokens": 2}}
    return httpx.post(server.base_url + GENERATION, json=body, timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}"})


@pytest.mark.parametrize(("path", "model", "why"), [
    ("/audios/corrupt.mp3", "qwen3-asr-flash", "not decodable audio"),
    ("/audios/silence.wav", "qwen3-asr-flash", "silent"),
    ("/audios/empty.wav", "qwen3-asr-flash", "empty"),
    ("/audios/long.wav", "qwen3-asr-flash", "more than the 180 s"),
    (WELCOME, "qwen-plus", "does not accept audio"),
    ("http://169.254.169.254/latest/meta-data", "qwen3-asr-flash", "link-local"),
    ("http://10.0.0.8/a.mp3", "qwen3-asr-flash", "private address"),
    ("ftp://example.com/a.mp3", "qwen3-asr-flash", "unsupported"),
])
def test_bad_audio_is_a_400_and_nothing_is_billed(asr_live: LiveServer, audio_host: MediaServer,
                                                  path: str, model: str, why: str) -> None:
    before = len(asr_live.gate.admissions)
    r = post(asr_live, model, path if "://" in path else audio_host.url(path))
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "InvalidParameter" and why in body["message"], body
    assert len(asr_live.gate.admissions) == before
    ok = post(asr_live, "qwen3-asr-flash", audio_host.url(WELCOME))  # the server is healthy
    assert ok.status_code == 200, ok.text
    # the wire usage has exactly the seed's keys (the SDK adds defaults of its own)
    assert set(ok.json()["usage"]) == {"input_tokens_details", "output_tokens_details",
                                       "seconds"}


def test_compatible_mode_is_refused_for_speech_models(asr_live: LiveServer) -> None:
    import openai

    client = openai.OpenAI(api_key=API_KEY, base_url=asr_live.compat_url)
    data = base64.b64encode(encode(tone(1.0), "wav")).decode()
    with pytest.raises(openai.BadRequestError, match="native API"):
        client.chat.completions.create(model="qwen3-asr-flash", messages=[
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {
                "data": f"data:audio/wav;base64,{data}", "format": "wav"}}]}])


@pytest.mark.parametrize("form", ["path", "file://"])
def test_sdk_uploads_a_local_recording(asr_live: LiveServer, tmp_path: Any, form: str) -> None:
    """The SDK's own upload flow: getPolicy, the form POST, then oss:// with the resolve
    header (seed 001's local-file example)."""
    path = tmp_path / "welcome.mp3"
    path.write_bytes(encode(tone(2.5, seed=9), "mp3"))
    audio = str(path) if form == "path" else f"file://{path}"
    r = sdk_call(asr_live, seed_messages(audio), asr_options={"language": "en"}, max_tokens=2)
    assert r.status_code == 200, r
    assert r.usage["seconds"] == 3
    assert r.output.choices[0].message.annotations == [{"type": "audio_info",
                                                        "language": "en"}]


def test_enable_lid_false_leaves_the_language_out(asr_live: LiveServer,
                                                  audio_host: MediaServer) -> None:
    r = sdk_call(asr_live, seed_messages(audio_host.url(WELCOME)),
                 asr_options={"enable_lid": False}, max_tokens=4)
    assert r.status_code == 200, r
    assert r.output.choices[0].message.annotations == [{"type": "audio_info"}]
