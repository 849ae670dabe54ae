"""The seed's qwen2-audio-instruct example end to end: the qwen2-audio-tiny preset (random
weights) served as qwen2-audio-instruct behind a live server, its recording served from
loopback, driven by the dashscope SDK; ``usage.audio_tokens``; and what an audio model
refuses with DashScope's 400 before anything is admitted or billed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dashserve.engine.async_engine import AsyncEngine
from tests.integration.conftest import API_KEY, LiveServer, start_server
from tests.utils.audio import encode, tone
from tests.utils.media_server import MediaServer, media_server
from tests.utils.sdk import dashscope_at

WELCOME = "/audios/welcome.mp3"
GENERATION = "/api/v1/services/aigc/multimodal-generation/generation"
MODEL = "qwen2-audio-instruct"


def qwen2_audio_tokens(frames: int) -> int:
    """The reference processor's count: one stride-2 convolution, then pooling by 2."""
    return (((frames - 1) // 2 + 1) - 2) // 2 + 1


@pytest.fixture(scope="module")
def audio_host() -> Iterator[MediaServer]:
    with media_server() as s:
        s.routes[WELCOME] = (encode(tone(1.6, seed=7), "mp3"), "audio/mpeg")
        s.routes["/audios/other.wav"] = (encode(tone(2.0, seed=8, freq=300.0), "wav"),
                                         "audio/wav")
        s.routes["/audios/corrupt.mp3"] = (b"ID3\x03\x00" + bytes(range(256)) * 8, "audio/mpeg")
        s.routes["/audios/long.wav"] = (encode(tone(31.0), "wav"), "audio/wav")
        yield s


@pytest.fixture(scope="module")
def live(model_dir_factory: Any, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[LiveServer]:
    audio = AsyncEngine.from_pretrained(str(model_dir_factory("qwen2-audio-tiny")),
                                        dtype="fp32", max_model_len=2048)
    text = AsyncEngine.from_pretrained(str(model_dir_factory("qwen3-tiny")), dtype="fp32",
                                       max_model_len=2048)
    server = start_server({MODEL: audio, "qwen-plus": text},  # type: ignore[dict-item]
                          data_dir=tmp_path_factory.mktemp("data"), media_allow_loopback=True)
    yield server
    server.stop()


def sdk_call(server: LiveServer, messages: list[dict[str, Any]], **params: Any) -> Any:

    with dashscope_at(server.native_url) as sdk:
        return sdk.MultiModalConversation.call(
            model=params.pop("model", MODEL), messages=messages, api_key=API_KEY, **params)


def seed_messages(url: str) -> list[dict[str, Any]]:
    """Seed 001's curl body: a system message as a part list, then the clip and a question."""
    return [{"role": "system", "content": [{"text": "You are a helpful assistant."}]},
            {"role": "user", "content": [{"audio": url}, {"text": "这段音频在说什么?"}]}]


def test_seed_example_answers_with_audio_tokens(live: LiveServer,
                                                audio_host: MediaServer) -> None:
    r = sdk_call(live, seed_messages(audio_host.url(WELCOME)), max_tokens=5)
    assert r.status_code == 200, r
    message = r.output.choices[0].message
    assert message.role == "assistant" and isinstance(message.content, list)
    audio_tokens = qwen2_audio_tokens(160)  # 1.6 s: 160 mel frames
    assert audio_tokens == 40
    usage = r.usage
    assert usage["audio_tokens"] == audio_tokens
    details = usage["input_tokens_details"]
    assert details["audio_tokens"] == audio_tokens
    assert details["text_tokens"] == usage["input_tokens"] - audio_tokens > 0
    assert 1 <= usage["output_tokens"] <= 5
    record = live.gate.records_for(r.request_id)
    assert record and record[0].input_tokens == usage["input_tokens"]


def test_the_prompt_is_the_qwen2_audio_template(live: LiveServer,
                                                audio_host: MediaServer) -> None:
    from dashserve.serving.request import AudioPart, GenerationRequest, Message

    service = live.app.state.service
    request = GenerationRequest(
        request_id="p", model=MODEL,
        messages=(Message("user", "What is it?", parts=(
            AudioPart(audio_host.url(WELCOME), "input.messages[0].content[0]"),
            "What is it?")),))
    plan = service.plan(request)  # before the clip is read: no placeholder rows yet
    text = plan.served.engine.tokenizer.decode(list(plan.prompt_token_ids))
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nAudio 1: <|audio_bos|><|audio_eos|>\nWhat is it?"
                    "<|im_end|>\n<|im_start|>assistant\n")
    assert plan.served.profile.family == "qwen2-audio"
    assert plan.sampling.repetition_penalty == 1.1  # seed 003's default


def test_two_clips_are_placed_in_order(live: LiveServer, audio_host: MediaServer) -> None:
    messages = [{"role": "user", "content": [
        {"audio": audio_host.url(WELCOME)}, {"audio": audio_host.url("/audios/other.wav")},
        {"text": "Compare them."}]}]
    r = sdk_call(live, messages, max_tokens=2)
    assert r.status_code == 200, r
    assert r.usage["audio_tokens"] == qwen2_audio_tokens(160) + qwen2_audio_tokens(200)


def post(server: LiveServer, model: str, content: list[dict[str, Any]],
         **parameters: Any) -> httpx.Response:
    body = {"model": model, "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": {"max_tokens": 2, **parameters}}
    return httpx.post(server.base_url + GENERATION, json=body, timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}"})


@pytest.mark.parametrize(("content", "params", "why"), [
    ([{"audio": "/audios/corrupt.mp3"}], {}, "not decodable audio"),
    ([{"audio": "/audios/long.wav"}], {}, "more than the 30 s"),
    ([{"text": "no clip"}], {}, "needs an audio part"),
    ([{"audio": WELCOME}], {"asr_options": {"language": "en"}}, "asr_options"),
    ([{"audio": WELCOME}] * 9, {}, "at most 8 audio clips"),
    ([{"audio": WELCOME}, {"image": "/images/a.png"}], {}, "not images"),
])
def test_bad_requests_are_a_400_and_nothing_is_billed(
        live: LiveServer, audio_host: MediaServer, content: list[dict[str, Any]],
        params: dict[str, Any], why: str) -> None:
    before = len(live.gate.admissions)
    content = [{k: audio_host.url(v) if k in ("audio", "image") else v for k, v in p.items()}
               for p in content]
    r = post(live, MODEL, content, **params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "InvalidParameter" and why in body["message"], body
    assert len(live.gate.admissions) == before
    ok = post(live, MODEL, [{"audio": audio_host.url(WELCOME)}, {"text": "hi"}])
    assert ok.status_code == 200, ok.text  # the server is healthy
    assert ok.json()["usage"]["audio_tokens"] == 40


def test_audio_sent_to_a_text_model_is_refused(live: LiveServer,
                                               audio_host: MediaServer) -> None:
    r = post(live, "qwen-plus", [{"audio": audio_host.url(WELCOME)}])
    assert r.status_code == 400 and "does not accept audio" in r.json()["message"]


def test_compatible_mode_takes_input_audio_parts(live: LiveServer) -> None:
    import base64

    import openai

    client = openai.OpenAI(api_key=API_KEY, base_url=live.compat_url)
    data = base64.b64encode(encode(tone(1.6, seed=7), "wav")).decode()
    r = client.chat.completions.create(model=MODEL, max_tokens=2, messages=[
        {"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": f"data:audio/wav;base64,{data}",
                                                    "format": "wav"}},
            {"type": "text", "text": "What is it?"}]}])
    assert r.choices[0].message.role == "assistant"
    assert r.usage is not None and r.usage.prompt_tokens > 40  # the clip's 40 rows and text


def test_typed_audio_tokens_stay_text(live: LiveServer, audio_host: MediaServer) -> None:
    """A client writing ``<|AUDIO|>`` in its text gets no placeholder: one clip, 40 rows."""
    r = post(live, MODEL, [{"audio": audio_host.url(WELCOME)},
                           {"text": "<|AUDIO|><|audio_bos|> what is it?"}])
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["audio_tokens"] == 40


def test_stream_reports_audio_tokens(live: LiveServer, audio_host: MediaServer) -> None:
    chunks = list(sdk_call(live, seed_messages(audio_host.url(WELCOME)), stream=True,
                           incremental_output=True, max_tokens=3))
    assert all(c.status_code == 200 for c in chunks), chunks[-1]
    last = chunks[-1]
    assert last.output.choices[0].finish_reason == "length"
    assert last.usage["audio_tokens"] == 40 and last.usage["output_tokens"] == 3
