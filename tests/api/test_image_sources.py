"""Where images may come from, and bad images: each a 400 with request_id, nothing billed."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.api.conftest import MULTIMODAL
from tests.api.test_images import data_url, native, png, qwen3_tokens
from tests.utils.fake_engine import FAKE_VISION, FakeEngine
from tests.utils.media_server import MediaServer, media_server
from tests.utils.recording_gate import RecordingGate

Factory = Callable[..., Any]


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with media_server() as s:
        s.routes["/cat.png"] = (png(300, 500), "image/png")
        yield s


@pytest.fixture
async def vl(make_client: Callable[..., httpx.AsyncClient], tmp_path: Path
             ) -> AsyncIterator[Factory]:
    """``await vl(**settings)``: a client whose qwen3-vl-plus has a vision encoder."""
    clients: list[httpx.AsyncClient] = []

    async def factory(**settings: Any) -> httpx.AsyncClient:
        engine = FakeEngine(vision=FAKE_VISION)
        client = make_client({"qwen3-vl-plus": engine}, data_dir=tmp_path / "data",
                             **settings)
        client.engine = engine  # type: ignore[attr-defined]
        clients.append(client)
        return await client.__aenter__()

    yield factory
    for client in clients:
        await client.__aexit__(None, None, None)


async def refused(client: httpx.AsyncClient, gate: RecordingGate, parts: list[dict[str, Any]],
                  words: str, **parameters: Any) -> None:
    """The request is a 400 naming the problem; nothing reached the engine or the bill; the
    server still answers."""
    r = await client.post(MULTIMODAL, json=native([*parts, {"text": "what?"}], **parameters))
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "InvalidParameter" and body["request_id"]
    assert words in body["message"], body["message"]
    assert not gate.records and not client.engine.submissions  # type: ignore[attr-defined]
    ok = await client.post(MULTIMODAL, json=native([{"text": "still there?"}]))
    assert ok.status_code == 200
    gate.records.clear()
    client.engine.submissions.clear()  # type: ignore[attr-defined]


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


async def test_bad_images(vl: Factory, gate: RecordingGate) -> None:
    client = await vl(max_images_per_request=2, media_max_bytes=64 * 1024)
    url = data_url
    await refused(client, gate, [{"image": url(b"garbage")}], "not a decodable image")
    await refused(client, gate, [{"image": url(png(8, 8)[:40])}], "not a decodable image")
    await refused(client, gate, [{"image": url(encoded(Image.new("RGB", (8, 8)), "PPM"))}],
                  "unsupported image format")
    await refused(client, gate, [{"image": "data:image/png,abc"}], "must be base64")
    await refused(client, gate, [{"image": "data:image/png;base64,@@@"}], "not valid base64")
    await refused(client, gate, [{"image": url(png(2, 500))}], "aspect ratio")
    await refused(client, gate, [{"image": url(png(8, 8))}] * 3, "at most 2 images")
    await refused(client, gate, [{"image": url(png(200, 200))}], "larger than 65536 bytes")
    bomb = encoded(Image.new("1", (12000, 12000)), "PNG")
    await refused(client, gate, [{"image": url(bomb)}], "too large to decode")
    await refused(client, gate, [{"image": ""}], "non-empty string")
    await refused(client, gate, [{"image": "ftp://example.com/a.png"}], "unsupported image")


async def test_urls_through_the_guard(vl: Factory, gate: RecordingGate,
                                      server: MediaServer) -> None:
    closed = await vl()
    await refused(closed, gate, [{"image": server.url("/cat.png")}], "loopback address")
    await refused(closed, gate, [{"image": "http://169.254.169.254/latest/meta-data"}],
                  "link-local")
    await refused(closed, gate, [{"image": "http://10.0.0.8/x.png"}], "private address")
    assert not server.hosts  # nothing was fetched
    client = await vl(media_allow_loopback=True)
    r = await client.post(MULTIMODAL, json=native([{"image": server.url("/cat.png")}]))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["image_tokens"] == qwen3_tokens(300, 500) + 2
    gate.records.clear()
    client.engine.submissions.clear()  # type: ignore[attr-defined]
    await refused(client, gate, [{"image": server.url("/redirect?to=http://169.254.169.254/")}],
                  "link-local")
    await refused(client, gate, [{"image": server.url("/missing.png")}], "HTTP 404")
    await refused(client, gate, [{"image": "http://127.0.0.1:1/x.png"}], "cannot download")


async def test_local_files_only_under_the_allowed_path(vl: Factory, gate: RecordingGate,
                                                       tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "cat.png").write_bytes(png(300, 500))
    (tmp_path / "secret.png").write_bytes(png(300, 500))
    (media / "link.png").symlink_to(tmp_path / "secret.png")
    closed = await vl()
    for source in (f"file://{media}/cat.png", str(media / "cat.png"), "/etc/passwd"):
        await refused(closed, gate, [{"image": source}], "local files cannot be read")
    client = await vl(allowed_local_media_path=media)
    for source in (f"file://{media}/cat.png", str(media / "cat.png")):
        r = await client.post(MULTIMODAL, json=native([{"image": source}]))
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["image_tokens"] == qwen3_tokens(300, 500) + 2
    gate.records.clear()
    client.engine.submissions.clear()  # type: ignore[attr-defined]
    for source in (str(tmp_path / "secret.png"), str(media / "link.png"),
                   f"file://{media}/../secret.png", str(media / "none.png")):
        await refused(client, gate, [{"image": source}], "not inside the allowed")


async def test_oss_keys_need_the_header(vl: Factory, gate: RecordingGate) -> None:
    client = await vl()
    await refused(client, gate, [{"image": "oss://ws-x/abc/cat.png"}],
                  "X-DashScope-OssResourceResolve")

