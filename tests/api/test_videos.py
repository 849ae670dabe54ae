"""Videos through both APIs on FakeEngines with vision encoders: frame lists and files,
placement per family, usage.video_tokens, and bad videos (400 with request_id, nothing billed)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashserve.multimodal.video import frame_size
from tests.api.conftest import CHAT, MULTIMODAL
from tests.api.test_images import QWEN25_VISION, data_url, native, png
from tests.utils.clips import audio_clip, video_clip
from tests.utils.fake_engine import FAKE_VISION, FakeEngine
from tests.utils.fake_tokenizer import SPECIAL_IDS
from tests.utils.recording_gate import RecordingGate

VPAD, START, END = (SPECIAL_IDS[t] for t in ("<|video_pad|>", "<|vision_start|>",
                                             "<|vision_end|>"))
Q25 = "qwen2.5-vl-7b-instruct"


def mp4_url(data: bytes) -> str:
    return "data:video/mp4;base64," + base64.b64encode(data).decode()


@pytest.fixture
async def engines(make_client: Callable[..., httpx.AsyncClient], engine: FakeEngine,
                  tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FakeEngine,
                                                         FakeEngine]]:
    q3, q25 = FakeEngine(vision=FAKE_VISION), FakeEngine(vision=QWEN25_VISION)
    async with make_client({"qwen3-vl-plus": q3, Q25: q25, "qwen-plus": engine},
                           data_dir=tmp_path) as c:
        yield c, q3, q25


def frames(n: int, width: int = 320, height: int = 240) -> list[str]:
    return [data_url(png(width, height, seed=i)) for i in range(n)]


async def test_frame_list_on_qwen25(engines: Any, gate: RecordingGate) -> None:
    client, _, q25 = engines
    r = await client.post(MULTIMODAL, json=native(
        [{"video": frames(3), "fps": 0.5}, {"text": "what happens?"}], model=Q25))
    assert r.status_code == 200, r.text
    sub = q25.submissions[-1]
    (item,) = sub.mm_inputs
    h, w = frame_size(240, 320, 4, 28, 50176, 501760, 51380224)  # 3 frames padded to 4
    assert item.kind == "video" and item.grid_thw == (2, h // 14, w // 14)
    assert item.second_per_grid_t == 4.0  # two frames at 0.5 fps
    ids = sub.prompt_token_ids
    assert ids[item.offset - 1] == START and ids[item.offset + item.length] == END
    assert ids.count(VPAD) == item.length == 2 * (h // 28) * (w // 28)
    usage = r.json()["usage"]
    assert usage["video_tokens"] == item.length + 2
    assert usage["input_tokens_details"] == {"text_tokens": usage["input_tokens"] - item.length
                                             - 2, "video_tokens": item.length + 2}
    assert gate.records[-1].input_tokens == usage["input_tokens"]


async def test_frame_list_on_qwen3_has_timestamps(engines: Any) -> None:
    client, q3, _ = engines
    r = await client.post(MULTIMODAL, json=native(
        [{"video": frames(4)}, {"text": "what happens?"}]))  # fps 2: frames 0.5 s apart
    assert r.status_code == 200, r.text
    sub = q3.submissions[-1]
    assert [i.grid_thw[0] for i in sub.mm_inputs] == [1, 1]
    text = q3.tokenizer.decode(sub.prompt_token_ids)
    per = sub.mm_inputs[0].length
    pads = "<|video_pad|>" * per
    assert (f"<0.2 seconds><|vision_start|>{pads}<|vision_end|><1.2 seconds>"
            f"<|vision_start|>{pads}<|vision_end|>what happens?") in text
    assert r.json()["usage"]["video_tokens"] == 2 * per + 2
    assert sub.mm_inputs[0].content_hash != sub.mm_inputs[1].content_hash


async def test_mp4_at_fps_1_in_compatible_mode(engines: Any) -> None:
    client, _, q25 = engines
    body = {"model": Q25, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": mp4_url(video_clip(8, 25, 320, 240))},
         "fps": 1},
        {"type": "text", "text": "describe"}]}]}
    r = await client.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    (item,) = q25.submissions[-1].mm_inputs
    assert item.grid_thw == (4, 18, 22) and item.length == 396  # 8 frames of 252x308
    details = r.json()["usage"]["prompt_tokens_details"]
    assert details["video_tokens"] == 398
    # the compatible {"type": "video", "video": [...]} form
    r = await client.post(CHAT, json={"model": Q25, "messages": [{"role": "user", "content": [
        {"type": "video", "video": frames(2)}, {"type": "text", "text": "x"}]}]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("part", "words"), [
    ({"video": [data_url(png(40, 30)), data_url(png(30, 40))]}, "same size"),
    ({"video": mp4_url(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)}, "not a decodable video"),
    ({"video": mp4_url(video_clip(3, 10)[:-3000])}, "not a decodable video"),
    ({"video": mp4_url(audio_clip())}, "audio only"),
    ({"video": mp4_url(video_clip(0.1, 10))}, "too short"),
    ({"video": [data_url(png(8, 8))] * 769}, "at most 768 frames"),
    ({"video": frames(2), "fps": 20}, "fps"),
    ({"video": frames(2), "fps": 0}, "fps"),
    ({"video": frames(2), "total_pixels": 5}, "total_pixels"),
    ({"video": frames(2), "max_pixels": 10**8}, "max_pixels"),
    ({"video": []}, "non-empty"),
    ({"video": [data_url(b"not an image")]}, "not a decodable image"),
])
async def test_bad_videos(engines: Any, gate: RecordingGate, part: dict[str, Any],
                          words: str) -> None:
    client, _, _ = engines
    r = await client.post(MULTIMODAL, json=native([part, {"text": "x"}], model=Q25))
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "InvalidParameter" and body["request_id"]
    assert words in body["message"] and "input.messages[0].content[0]" in body["message"]
    assert not gate.records
    ok = await client.post(MULTIMODAL, json=native([{"text": "still there?"}], model=Q25))
    assert ok.status_code == 200


async def test_videos_only_in_user_messages_and_only_on_vision_models(engines: Any) -> None:
    client, _, _ = engines
    body = native([{"video": frames(2)}, {"text": "x"}], model="qwen-plus")
    r = await client.post(MULTIMODAL, json=body)
    assert r.status_code == 400 and "does not accept videos" in r.json()["message"]
    body = {"model": Q25, "input": {"messages": [
        {"role": "assistant", "content": [{"video": frames(2)}]},
        {"role": "user", "content": [{"text": "x"}]}]}}
    r = await client.post(MULTIMODAL, json=body)
    assert r.status_code == 400 and "user messages" in r.json()["message"]


@pytest.mark.parametrize("vision", [FAKE_VISION, QWEN25_VISION])
def test_positions_after_a_video_map_into_the_placed_prompt(vision: Any) -> None:
    """``expanded_position`` (explicit-cache pins) agrees with ``place_images`` on videos."""
    import numpy as np

    from dashserve.multimodal.video_frames import VideoBounds, preprocess_video
    from dashserve.serving.vision import expanded_position, place_images
    from tests.utils.fake_tokenizer import FakeTokenizer

    clip = np.random.default_rng(0).integers(0, 256, (4, 64, 96, 3), dtype=np.uint8)
    video = preprocess_video(clip, [0, 1, 2, 3], 2.0, VideoBounds(3136, 501760, 51380224),
                             patch_size=vision.patch_size, merge_size=2, mean=(0.5,) * 3,
                             std=(0.5,) * 3)
    encode = FakeTokenizer().encode_prompt
    prompt = [1, 2, START, VPAD, END, 3, 4]
    ids, items = place_images(prompt, [], vision, [video], encode)
    assert ids[expanded_position(5, prompt, [], vision, [video], encode)] == 3
    assert ids[-2:] == [3, 4] and ids[:2] == [1, 2]
    assert sum(i.length for i in items) == video.num_tokens
    assert all(ids[i.offset - 1] == START and ids[i.offset + i.length] == END for i in items)
