"""Images through both APIs on a FakeEngine with a vision encoder: placement, usage, options."""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from dashserve.multimodal.image import image_tokens
from tests.api.conftest import CHAT, MULTIMODAL, NATIVE
from tests.utils.fake_engine import FAKE_VISION, FakeEngine
from tests.utils.fake_tokenizer import SPECIAL_IDS
from tests.utils.recording_gate import RecordingGate
from tests.utils.sse import native_events

PAD = SPECIAL_IDS["<|image_pad|>"]
START = SPECIAL_IDS["<|vision_start|>"]
END = SPECIAL_IDS["<|vision_end|>"]
QWEN25_VISION = dataclasses.replace(FAKE_VISION, family="qwen2.5-vl", patch_size=14)


def png(width: int, height: int, seed: int = 0, fmt: str = "PNG") -> bytes:
    data = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(data).save(out, fmt)
    return out.getvalue()


def data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def qwen3_tokens(width: int, height: int, **bounds: int) -> int:
    return image_tokens(height, width, patch_size=16, merge_size=2,
                        min_pixels=bounds.get("min_pixels", 65536),
                        max_pixels=bounds.get("max_pixels", 2621440))[0]


def native(content: list[dict[str, Any]], model: str = "qwen3-vl-plus",
           history: list[dict[str, Any]] | None = None, **parameters: Any) -> dict[str, Any]:
    messages = [*(history or []), {"role": "user", "content": content}]
    return {"model": model, "input": {"messages": messages}, "parameters": parameters}


@pytest.fixture
def vl_engine() -> FakeEngine:
    return FakeEngine(vision=FAKE_VISION)


@pytest.fixture
async def vl_client(make_client: Callable[..., httpx.AsyncClient], vl_engine: FakeEngine,
                    engine: FakeEngine, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    engines = {"qwen3-vl-plus": vl_engine, "qwen-vl-max": vl_engine, "qwen-plus": engine,
               "qwen2.5-vl-7b-instruct": FakeEngine(vision=QWEN25_VISION)}
    async with make_client(engines, data_dir=tmp_path) as c:
        yield c


def placed(engine: FakeEngine) -> list[tuple[int, int]]:
    """(offset, length) of each image of the last submission, checked against its ids."""
    sub = engine.submissions[-1]
    ids = sub.prompt_token_ids
    out = []
    for item in sub.mm_inputs:
        assert ids[item.offset - 1] == START and ids[item.offset + item.length] == END
        assert ids[item.offset:item.offset + item.length] == [PAD] * item.length
        assert item.pixel_values.shape[0] == item.length * 4
        out.append((item.offset, item.length))
    assert ids.count(PAD) == sum(n for _, n in out)
    return out


async def test_native_image_and_text(vl_client: httpx.AsyncClient, vl_engine: FakeEngine,
                                     gate: RecordingGate) -> None:
    body = native([{"image": data_url(png(300, 500))}, {"text": "what is this?"}])
    r = await vl_client.post(MULTIMODAL, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["output"]["choices"][0]["message"]["content"] == [{"text": "Hello from dashserve!"}]
    tokens = qwen3_tokens(300, 500)
    assert placed(vl_engine) == [(placed(vl_engine)[0][0], tokens)]
    usage = out["usage"]
    assert usage["image_tokens"] == tokens + 2  # with <|vision_start|> and <|vision_end|>
    assert usage["input_tokens"] == len(vl_engine.submissions[-1].prompt_token_ids)
    assert usage["input_tokens_details"] == {"text_tokens": usage["input_tokens"] - tokens - 2,
                                             "image_tokens": tokens + 2}
    assert "image_hw" not in usage
    assert gate.records[-1].image_tokens == tokens + 2
    assert gate.records[-1].input_tokens == usage["input_tokens"]


async def test_several_images_in_order_and_in_history(vl_client: httpx.AsyncClient,
                                                      vl_engine: FakeEngine) -> None:
    history = [{"role": "user", "content": [{"image": data_url(png(64, 64, 1))},
                                            {"text": "first"}]},
               {"role": "assistant", "content": [{"text": "a cat"}]}]
    content = [{"text": "compare"}, {"image": data_url(png(700, 300, 2))},
               {"text": "and"}, {"image": data_url(png(1200, 900, 3)), "max_pixels": 200000}]
    r = await vl_client.post(MULTIMODAL, json=native(content, history=history))
    assert r.status_code == 200, r.text
    spots = placed(vl_engine)
    assert [n for _, n in spots] == [qwen3_tokens(64, 64), qwen3_tokens(700, 300),
                                     qwen3_tokens(1200, 900, max_pixels=200000)]
    assert spots == sorted(spots)
    hashes = [i.content_hash for i in vl_engine.submissions[-1].mm_inputs]
    assert len(set(hashes)) == 3


async def test_compatible_image_url_with_pixel_bounds(vl_client: httpx.AsyncClient,
                                                      vl_engine: FakeEngine) -> None:
    body = {"model": "qwen3-vl-plus", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(png(40, 40))},
         "min_pixels": 200000},
        {"type": "text", "text": "hi"}]}]}
    r = await vl_client.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    tokens = qwen3_tokens(40, 40, min_pixels=200000)
    assert placed(vl_engine)[0][1] == tokens
    details = r.json()["usage"]["prompt_tokens_details"]
    assert details["image_tokens"] == tokens + 2
    assert details["text_tokens"] == r.json()["usage"]["prompt_tokens"] - tokens - 2


async def test_family_pixel_rules(vl_client: httpx.AsyncClient, vl_engine: FakeEngine) -> None:
    big = data_url(png(2000, 2000, fmt="JPEG"), "jpeg")
    r = await vl_client.post(MULTIMODAL, json=native([{"image": big}, {"text": "x"}]))
    assert placed(vl_engine)[0][1] == qwen3_tokens(2000, 2000) < 62 * 62
    body = native([{"image": big, "max_pixels": 70000}, {"text": "x"}],
                  vl_high_resolution_images=True)
    r = await vl_client.post(MULTIMODAL, json=body)
    assert r.status_code == 200, r.text
    assert placed(vl_engine)[0][1] == 62 * 62  # cap 16384 tokens; max_pixels ignored
    # Qwen2.5-VL: 28x28 pixels per token
    r = await vl_client.post(MULTIMODAL, json=native([{"image": data_url(png(300, 500))}],
                                                     model="qwen2.5-vl-7b-instruct"))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["image_tokens"] == 198 + 2


@pytest.mark.parametrize("part,param", [
    ({"min_pixels": 4096}, "input.messages[0].content[0].min_pixels"),
    ({"max_pixels": 16777217}, "input.messages[0].content[0].max_pixels"),
    ({"min_pixels": "big"}, "input.messages[0].content[0].min_pixels"),
])
async def test_pixel_values_out_of_range(vl_client: httpx.AsyncClient, gate: RecordingGate,
                                         part: dict[str, Any], param: str) -> None:
    body = native([{"image": data_url(png(40, 40)), **part}, {"text": "x"}])
    r = await vl_client.post(MULTIMODAL, json=body)
    assert r.status_code == 400
    assert r.json()["code"] == "InvalidParameter" and param in r.json()["message"]
    assert not gate.records


async def test_image_hw_output(vl_client: httpx.AsyncClient) -> None:
    body = native([{"image": data_url(png(300, 500))}, {"text": "x"}],
                  vl_enable_image_hw_output=True)
    r = await vl_client.post(MULTIMODAL, json=body)
    hw = list(image_tokens(500, 300, patch_size=16, merge_size=2, min_pixels=65536,
                           max_pixels=2621440)[1:])
    assert r.json()["usage"]["image_hw"] == [hw] == [[512, 288]]
    r = await vl_client.post(MULTIMODAL, json=body, headers={"X-DashScope-SSE": "enable"})
    usages = [e["data"]["usage"] for e in native_events(r.text) if "data" in e]
    assert usages[-1]["image_hw"] == [hw]
    assert all("image_hw" not in u for u in usages[:-1])


async def test_vision_profiles(vl_client: httpx.AsyncClient) -> None:
    # result_format "text" has no effect on VL models; qwen-vl models take no tools
    r = await vl_client.post(NATIVE, json=native([{"text": "hi"}], result_format="text"))
    assert "choices" in r.json()["output"]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = await vl_client.post(MULTIMODAL, json=native([{"text": "hi"}], model="qwen-vl-max",
                                                     tools=tools))
    assert r.status_code == 400 and "tools" in r.json()["message"]


async def test_tokenizer_counts_images(vl_client: httpx.AsyncClient) -> None:
    body = native([{"image": data_url(png(300, 500))}, {"text": "x"}])
    r = await vl_client.post("/api/v1/tokenizer", json=body)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["image_tokens"] == qwen3_tokens(300, 500) + 2
    assert r.json()["output"]["token_ids"].count(PAD) == qwen3_tokens(300, 500)


async def test_images_only_in_user_messages(vl_client: httpx.AsyncClient) -> None:
    history = [{"role": "assistant", "content": [{"image": data_url(png(40, 40))}]}]
    r = await vl_client.post(MULTIMODAL, json=native([{"text": "x"}], history=history))
    assert r.status_code == 400 and "user messages" in r.json()["message"]


async def test_explicit_cache_mark_after_an_image(vl_client: httpx.AsyncClient,
                                                  vl_engine: FakeEngine) -> None:
    content = [{"image": data_url(png(1024, 1024, fmt="JPEG"), "jpeg")},
               {"text": "look", "cache_control": {"type": "ephemeral"}}, {"text": " here"}]
    r = await vl_client.post(MULTIMODAL, json=native(content))
    assert r.status_code == 200, r.text
    sub = vl_engine.submissions[-1]
    ids = sub.prompt_token_ids
    after_image = ids.index(END) + 1
    assert ids[after_image:after_image + 4] == list(b"look")
    assert sub.params.pin_prefix_tokens == after_image + 4 > 1024


async def test_preprocessing_runs_off_the_event_loop(vl_client: httpx.AsyncClient,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from dashserve.serving import vision

    threads: list[str] = []
    real = vision.preprocess_image

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(vision, "preprocess_image", spy)
    body = native([{"image": data_url(png(64, 64))}, {"image": data_url(png(80, 64))}])
    assert (await vl_client.post(MULTIMODAL, json=body)).status_code == 200
    assert len(threads) == 2 and all(t.startswith("dashserve-image") for t in threads)
