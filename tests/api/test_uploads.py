"""The SDK's upload flow: getPolicy, the signed form POST, oss:// keys bound to a workspace."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashserve.media.uploads import UploadStore
from tests.api.conftest import MULTIMODAL
from tests.api.test_images import native, png, qwen3_tokens
from tests.utils.fake_engine import FAKE_VISION, FakeEngine
from tests.utils.recording_gate import RecordingGate

OSS = {"X-DashScope-OssResourceResolve": "enable"}
POLICY_URL = "/api/v1/uploads?action=getPolicy&model=qwen3-vl-plus"


@pytest.fixture
async def client(make_client: Callable[..., httpx.AsyncClient],
                 tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client({"qwen3-vl-plus": FakeEngine(vision=FAKE_VISION)},
                           data_dir=tmp_path, media_max_bytes=1024 * 1024) as c:
        yield c


def store_of(client: httpx.AsyncClient) -> UploadStore:
    store = client.app.state.service.images.config.uploads  # type: ignore[attr-defined]
    assert store is not None
    return store


def form(grant: dict[str, Any], name: str = "cat.png", **override: str) -> dict[str, str]:
    """The fields the dashscope SDK posts (utils/oss_utils.py) under the policy ``grant``."""
    fields = {"OSSAccessKeyId": grant["oss_access_key_id"], "Signature": grant["signature"],
              "policy": grant["policy"], "key": grant["upload_dir"] + "/" + name,
              "x-oss-object-acl": grant["x_oss_object_acl"],
              "x-oss-forbid-overwrite": grant["x_oss_forbid_overwrite"],
              "success_action_status": "200", "x-oss-content-type": "image/png"}
    fields.update(override)
    return fields


async def upload(client: httpx.AsyncClient, fields: dict[str, str], data: bytes,
                 headers: dict[str, str] | None = None) -> httpx.Response:
    # no API key: the signed policy is the grant
    return await client.post("/api/v1/uploads/oss", data=fields,
                             files={"file": ("cat.png", data, "image/png")},
                             headers={"Authorization": "", **(headers or {})})


async def get_policy(client: httpx.AsyncClient, **headers: str) -> dict[str, Any]:
    r = await client.get(POLICY_URL, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


async def test_policy_needs_a_key_and_names_this_server(client: httpx.AsyncClient,
                                                        make_client: Any,
                                                        tmp_path: Path) -> None:
    r = await client.get(POLICY_URL, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    policy = await get_policy(client)
    assert policy["upload_host"] == "http://test/api/v1/uploads/oss"
    assert policy["upload_dir"].count("/") == 1
    for field in ("policy", "signature", "oss_access_key_id", "x_oss_object_acl",
                  "x_oss_forbid_overwrite"):
        assert policy[field]
    assert (await client.get("/api/v1/uploads?action=other")).status_code == 400
    async with make_client({}, data_dir=tmp_path, public_url="https://ds.example.com/") as c:
        assert (await get_policy(c))["upload_host"] == \
            "https://ds.example.com/api/v1/uploads/oss"


async def test_upload_then_oss_image(client: httpx.AsyncClient, gate: RecordingGate) -> None:
    policy = await get_policy(client)
    assert (await upload(client, form(policy), png(300, 500))).status_code == 200
    key = policy["upload_dir"] + "/cat.png"
    body = native([{"image": "oss://" + key}, {"text": "what is it?"}])
    r = await client.post(MULTIMODAL, json=body, headers=OSS)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["image_tokens"] == qwen3_tokens(300, 500) + 2
    gate.records.clear()
    r = await client.post(MULTIMODAL, json=body)  # without the header
    assert r.status_code == 400 and "OssResourceResolve" in r.json()["message"]
    r = await client.post(MULTIMODAL, json=body, headers={**OSS, "X-DashScope-WorkSpace": "w2"})
    assert r.status_code == 400 and "not a file uploaded in this workspace" in r.json()["message"]
    assert not gate.records


async def test_workspaces_do_not_share_uploads(client: httpx.AsyncClient) -> None:
    policy = await get_policy(client, **{"X-DashScope-WorkSpace": "w2"})
    assert (await upload(client, form(policy), png(64, 64))).status_code == 200
    body = native([{"image": f"oss://{policy['upload_dir']}/cat.png"}])
    assert (await client.post(MULTIMODAL, json=body, headers=OSS)).status_code == 400
    r = await client.post(MULTIMODAL, json=body, headers={**OSS, "X-DashScope-WorkSpace": "w2"})
    assert r.status_code == 200, r.text


async def test_bad_uploads_are_refused(client: httpx.AsyncClient) -> None:
    policy = await get_policy(client)
    other = await get_policy(client)
    cases = [
        (form(policy, Signature="Zm9yZ2Vk"), "signature does not match"),
        (form(policy, policy=other["policy"]), "signature does not match"),
        (form(policy, key=other["upload_dir"] + "/cat.png"), "outside the policy"),
        (form(policy, key=policy["upload_dir"] + "/../x/cat.png"), "outside the policy"),
        (form(policy, key=policy["upload_dir"] + "/"), "outside the policy"),
    ]
    for fields, words in cases:
        r = await upload(client, fields, png(8, 8))
        assert r.status_code == 400, (fields, r.text)
        assert words in r.json()["message"] and r.json()["request_id"]
    r = await upload(client, form(policy), b"")
    assert r.status_code == 400 and "between 1 and" in r.json()["message"]
    r = await upload(client, form(policy), os.urandom(1100 * 1024))
    assert r.status_code in (400, 413)
    expired = store_of(client).issue(None, "http://test/api/v1/uploads/oss",
                                     now=time.time() - 3600).as_output()
    r = await upload(client, form(expired), png(8, 8))
    assert r.status_code == 400 and "expired" in r.json()["message"]
    assert not list((store_of(client).files).rglob("*.png"))


async def test_uploads_expire(client: httpx.AsyncClient) -> None:
    policy = await get_policy(client)
    assert (await upload(client, form(policy), png(64, 64))).status_code == 200
    path = store_of(client).files / policy["upload_dir"] / "cat.png"
    old = time.time() - store_of(client).ttl_s - 10
    os.utime(path, (old, old))
    body = native([{"image": f"oss://{policy['upload_dir']}/cat.png"}])
    r = await client.post(MULTIMODAL, json=body, headers=OSS)
    assert r.status_code == 400 and "expired" in r.json()["message"]
    os.utime(path.parent, (old, old))
    store_of(client).sweep()
    assert not path.parent.exists()
