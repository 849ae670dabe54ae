"""The files API through the real openai and dashscope SDKs against a live server with the
real platform (keys in workspaces, SQLite), and ``fileid://`` documents in chat on both APIs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from dashserve.app import create_app
from dashserve.config import Settings
from dashserve.platform.blobs import LocalBlobStore
from dashserve.platform.files import FileLimits, FileService
from dashserve.platform.state import PlatformSettings, prepare_platform
from tests.integration.conftest import free_port
from tests.utils.documents import docx_bytes, epub_bytes, pdf_bytes, zip_bomb
from tests.utils.fake_engine import FakeEngine

ADMIN = "sk-admin-files"
CAP = 64 * 1024
NATIVE_CHAT = "/api/v1/services/aigc/text-generation/generation"


@dataclass
class Server:
    base_url: str
    engine: FakeEngine
    files_dir: Path
    keys: dict[str, str]  # workspace -> key
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def compat_url(self) -> str:
        return self.base_url + "/compatible-mode/v1"

    def openai(self, workspace: str = "ws-a") -> Any:
        import openai

        return openai.OpenAI(api_key=self.keys[workspace], base_url=self.compat_url,
                             max_retries=0)

    def headers(self, workspace: str = "ws-a") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[workspace]}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("files-server")
    platform = prepare_platform(PlatformSettings(data_dir=root, admin_keys=(ADMIN,)))
    files = FileService(platform.store, LocalBlobStore(root / "files"),
                        FileLimits(max_file_bytes=CAP))
    engine = FakeEngine(max_model_len=2048)
    slow = FakeEngine(script=[f" w{i}" for i in range(200)], token_delay_s=0.05)
    app = create_app(Settings(data_dir=root, partial_response_timeout_s=1.5),
                     {"qwen-long": engine, "qwen-plus": engine, "qwen-long-latest": slow},
                     platform.gate, files=files, platform=platform)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    keys = {}
    for ws in ("ws-a", "ws-b"):
        r = httpx.post(base + "/admin/v1/keys", json={"workspace": ws, "name": ws},
                       headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code in (200, 201), r.text
        keys[ws] = r.json()["secret"]
    yield Server(base, engine, root / "files", keys, uv, thread)
    uv.should_exit = True
    thread.join(15)


def prompt_of(server: Server, request_id: str) -> str:
    (sub,) = [s for s in server.engine.submissions if s.request_id == request_id]
    return server.engine.tokenizer.decode(sub.prompt_token_ids)


def test_openai_sdk_files_round_trip(server: Server) -> None:
    import openai

    client = server.openai()
    pdf = pdf_bytes(["The warranty lasts 24 months."])
    created = client.files.create(file=("manual.pdf", pdf, "application/pdf"),
                                  purpose="file-extract")
    assert created.id.startswith("file-fe-") and created.object == "file"
    assert (created.filename, created.bytes, created.status) == ("manual.pdf", len(pdf),
                                                                 "processed")
    assert created.purpose == "file-extract"
    more = [client.files.create(file=(f"n{i}.txt", f"note {i}".encode()),
                                purpose="file-extract").id for i in range(3)]
    listed = [f.id for f in client.files.list(limit=2)]  # the SDK follows has_more/after
    assert listed[:3] == more[::-1] and created.id in listed
    first_page = client.files.list(limit=2)
    assert len(first_page.data) == 2 and first_page.has_more
    assert [f.id for f in client.files.list(order="asc")][-1] == more[-1]
    assert client.files.retrieve(created.id).filename == "manual.pdf"
    assert client.files.content(created.id).content == pdf
    deleted = client.files.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve(created.id)
    assert "not found" in err.value.message
    for file_id in more:
        client.files.delete(file_id)


def test_dashscope_sdk_files_round_trip(server: Server, tmp_path: Path) -> None:
    import dashscope

    path = tmp_path / "policy.docx"
    path.write_bytes(docx_bytes(["Refunds within 30 days."]))
    key, base = server.keys["ws-a"], server.base_url + "/api/v1"
    up = dashscope.Files.upload(str(path), purpose="file-extract", description="refund policy",
                                api_key=key, base_address=base)
    assert up.status_code == 200, up
    (uploaded,) = up.output["uploaded_files"]
    assert uploaded["name"] == "policy.docx" and up.request_id
    file_id = uploaded["file_id"]
    got = dashscope.Files.get(file_id, api_key=key, base_address=base)
    assert got.status_code == 200 and got.output["name"] == "policy.docx"
    assert got.output["description"] == "refund policy" and got.output["status"] == "processed"
    assert got.output["size"] == path.stat().st_size and len(got.output["md5"]) == 32
    page = dashscope.Files.list(page=1, page_size=10, api_key=key, base_address=base)
    assert page.status_code == 200 and file_id in [f["file_id"] for f in page.output["files"]]
    assert page.output["total"] >= 1
    other = dashscope.Files.get(file_id, api_key=server.keys["ws-b"], base_address=base)
    assert (other.status_code, other.code) == (400, "InvalidParameter")  # as DashScope says it
    assert "not found" in other.message
    other = dashscope.Files.delete(file_id, api_key=server.keys["ws-b"], base_address=base)
    assert other.status_code == 400
    gone = dashscope.Files.delete(file_id, api_key=key, base_address=base)
    assert gone.status_code == 200
    assert dashscope.Files.get(file_id, api_key=key, base_address=base).status_code == 400


def test_dashscope_v2_client_files(server: Server, tmp_path: Path) -> None:
    import dashscope
    from dashscope.v2.errors import NotFoundError

    path = tmp_path / "book.epub"
    path.write_bytes(epub_bytes(["Once upon a time."]))
    client = dashscope.Client(api_key=server.keys["ws-a"], base_url=server.base_url + "/api/v1")
    uploaded = client.files.upload(file_path=str(path), purpose="file-extract")
    assert uploaded.file_id and uploaded.name == "book.epub" and uploaded.uploaded_at
    assert uploaded.size == path.stat().st_size and uploaded.purpose == "file-extract"
    listed = client.files.list(page_no=1, page_size=100)
    assert uploaded.file_id in [f.file_id for f in listed.files] and listed.total_count >= 1
    assert client.files.get(uploaded.file_id).name == "book.epub"
    assert client.files.delete(uploaded.file_id).deleted
    with pytest.raises(NotFoundError):
        client.files.get(uploaded.file_id)


def test_native_upload_of_several_files_is_all_or_nothing(server: Server) -> None:
    url, headers = server.base_url + "/api/v1/files", server.headers()
    before = httpx.get(url, headers=headers).json()["data"]["total"]
    r = httpx.post(url, headers=headers, data={"descriptions": ["first", "second"]},
                   files=[("files", ("a.txt", b"good")), ("files", ("b.json", b"{broken"))])
    assert r.status_code == 400 and "b.json" in r.json()["message"]
    assert httpx.get(url, headers=headers).json()["data"]["total"] == before
    r = httpx.post(url, headers=headers, data={"descriptions": ["first", "second"]},
                   files=[("files", ("a.txt", b"good")), ("files", ("b.json", b"{}"))])
    assert r.status_code == 200, r.text
    uploaded = r.json()["data"]["uploaded_files"]
    assert [u["name"] for u in uploaded] == ["a.txt", "b.json"]
    described = httpx.get(f"{url}/{uploaded[1]['file_id']}", headers=headers).json()["data"]
    assert described["description"] == "second"
    for u in uploaded:
        httpx.delete(f"{url}/{u['file_id']}", headers=headers)


def test_fileid_in_compatible_chat(server: Server) -> None:
    client = server.openai()
    doc = client.files.create(file=("facts.txt", b"The capital of Atlantis is Poseidonia."),
                              purpose="file-extract")
    with httpx.Client(base_url=server.compat_url, headers=server.headers(), timeout=30) as c:
        r = c.post("/chat/completions", json={"model": "qwen-long", "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "system", "content": f"fileid://{doc.id}"},
            {"role": "user", "content": "What is the capital?"}]})
    assert r.status_code == 200, r.text
    prompt = prompt_of(server, r.json()["id"].removeprefix("chatcmpl-"))
    assert "The capital of Atlantis is Poseidonia." in prompt and "fileid://" not in prompt
    doc_tokens = len(server.engine.tokenizer.encode("The capital of Atlantis is Poseidonia."))
    assert r.json()["usage"]["prompt_tokens"] > doc_tokens


def test_several_fileids_in_native_chat(server: Server) -> None:
    client = server.openai()
    a = client.files.create(file=("a.md", b"# Part A\nalpha"), purpose="file-extract").id
    b = client.files.create(file=("b.csv", b"k,v\nbeta,2\n"), purpose="file-extract").id
    body = {"model": "qwen-long", "parameters": {"result_format": "message"},
            "input": {"messages": [{"role": "system", "content": f"fileid://{a}, {b}"},
                                   {"role": "user", "content": "Summarise"}]}}
    r = httpx.post(server.base_url + NATIVE_CHAT, json=body, headers=server.headers())
    assert r.status_code == 200, r.text
    prompt = prompt_of(server, r.json()["request_id"])
    assert prompt.index("alpha") < prompt.index("beta,2")
    (sub,) = [s for s in server.engine.submissions if s.request_id == r.json()["request_id"]]
    p = sub.params  # qwen-long's documented defaults (seed 003)
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.presence_penalty,
            p.seed) == (1.0, 0.8, 20, 1.05, 0.0, 1234)
    assert r.json()["usage"]["input_tokens"] == len(
        [s for s in server.engine.submissions if s.request_id == r.json()["request_id"]][0]
        .prompt_token_ids)


def test_fileid_of_another_workspace_or_deleted_is_refused(server: Server) -> None:
    import openai

    owner = server.openai("ws-a")
    doc = owner.files.create(file=("x.txt", b"private"), purpose="file-extract")

    def ask(workspace: str) -> httpx.Response:
        body = {"model": "qwen-long", "input": {"messages": [
            {"role": "system", "content": f"fileid://{doc.id}"},
            {"role": "user", "content": "hi"}]}}
        return httpx.post(server.base_url + NATIVE_CHAT, json=body,
                          headers=server.headers(workspace))

    assert ask("ws-a").status_code == 200
    refused = ask("ws-b")
    assert refused.status_code == 400 and refused.json()["code"] == "InvalidParameter"
    assert doc.id in refused.json()["message"] and refused.json()["request_id"]
    intruder = server.openai("ws-b")
    with pytest.raises(openai.NotFoundError):
        intruder.files.delete(doc.id)
    with pytest.raises(openai.NotFoundError):
        intruder.files.content(doc.id)
    owner.files.delete(doc.id)
    gone = ask("ws-a")
    assert gone.status_code == 400 and "not found" in gone.json()["message"]
    with pytest.raises(openai.BadRequestError, match="not found"):
        owner.chat.completions.create(model="qwen-long", messages=[
            {"role": "system", "content": f"fileid://{doc.id}"},
            {"role": "user", "content": "hi"}])


def test_documents_too_long_for_the_model(server: Server) -> None:
    client = server.openai()
    words = " ".join(f"w{i}" for i in range(3000))  # the fake engine holds 2,048 tokens
    doc = client.files.create(file=("long.txt", words.encode()), purpose="file-extract")
    body = {"model": "qwen-long", "input": {"messages": [
        {"role": "system", "content": f"fileid://{doc.id}"}, {"role": "user", "content": "?"}]}}
    r = httpx.post(server.base_url + NATIVE_CHAT, json=body, headers=server.headers())
    assert r.status_code == 400 and "too long" in r.json()["message"]


def test_bad_uploads_get_clear_errors(server: Server) -> None:
    import openai

    client = server.openai()
    before = sorted(p.name for p in server.files_dir.iterdir())
    cases: list[tuple[Any, str, str]] = [
        (("empty.txt", b""), "file-extract", "empty"),
        (("a.txt", b"x"), "fine-tune", "purpose"),
        (("broken.pdf", b"%PDF-1.7\nnot really"), "file-extract", "PDF"),
        (("broken.docx", b"PK\x03\x04garbage"), "file-extract", "cannot be read"),
        (("bomb.xlsx", zip_bomb("xl/worksheets/sheet1.xml")), "file-extract", "zip bomb"),
        (("image.png", b"\x89PNG\r\n"), "file-extract", "unsupported file type"),
    ]
    for file, purpose, message in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.files.create(file=file, purpose=purpose)
        assert message in err.value.message, (file[0], err.value.message)
    with pytest.raises(openai.APIStatusError) as too_big:
        client.files.create(file=("big.txt", b"x" * (CAP + 1)), purpose="file-extract")
    assert too_big.value.status_code == 413
    with httpx.Client(base_url=server.compat_url, headers=server.headers()) as c:
        r = c.post("/files", json={"purpose": "file-extract"})
        assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]
        r = c.post("/files", data={"purpose": "file-extract"}, files={"other": ("a.txt", b"x")})
        assert r.status_code == 400
        r = c.post("/files", files={"file": ("a.txt", b"x")})
        assert r.status_code == 400 and "purpose" in r.json()["error"]["message"]
        r = c.post("/files", data={"purpose": "file-extract", "file": "not a file"})
        assert r.status_code == 400
        huge = c.post("/files", content=b"x" * (CAP + 2 * 2**20),
                      headers={"content-type": "multipart/form-data; boundary=zz"})
        assert huge.status_code == 413
    assert sorted(p.name for p in server.files_dir.iterdir()) == before  # nothing half-stored
    assert httpx.get(server.base_url + "/health").status_code == 200


def test_path_tricks_in_names_stay_names(server: Server) -> None:
    client = server.openai()
    created = client.files.create(file=("../../../escape.txt", b"inside"),
                                  purpose="file-extract")
    assert created.filename == "escape.txt"
    root = server.files_dir
    assert not (root.parent / "escape.txt").exists() and not (root / "escape.txt").exists()
    assert (root / created.id / "original").read_bytes() == b"inside"
    client.files.delete(created.id)
    assert not (root / created.id).exists()


def test_requests_need_a_key(server: Server) -> None:
    r = httpx.get(server.compat_url + "/files")
    assert r.status_code == 401
    r = httpx.get(server.base_url + "/api/v1/files", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["code"] == "InvalidApiKey"


def test_long_document_answers_are_cut_off_with_a_partial_response(server: Server) -> None:
    doc = server.openai().files.create(file=("d.txt", b"a long report"), purpose="file-extract")
    body = {"model": "qwen-long-latest", "input": {"messages": [
        {"role": "system", "content": f"fileid://{doc.id}"}, {"role": "user", "content": "?"}]}}
    r = httpx.post(server.base_url + NATIVE_CHAT, json=body, headers=server.headers(),
                   timeout=30)
    assert r.status_code == 200 and r.headers["x-dashscope-partialresponse"] == "true"
    choice = r.json()["output"]["choices"][0]  # qwen-long answers in message format
    assert choice["finish_reason"] is None and choice["message"]["content"].startswith(" w0")


def test_tokenizer_counts_documents_as_generation_bills_them(server: Server) -> None:
    doc = server.openai().files.create(file=("t.txt", b"one two three four five six"),
                                       purpose="file-extract")
    messages = [{"role": "system", "content": f"fileid://{doc.id}"},
                {"role": "user", "content": "count"}]
    r = httpx.post(server.base_url + "/api/v1/tokenizer", headers=server.headers(),
                   json={"model": "qwen-long", "input": {"messages": messages}})
    assert r.status_code == 200, r.text
    chat = httpx.post(server.base_url + NATIVE_CHAT, headers=server.headers(),
                      json={"model": "qwen-long", "input": {"messages": messages}})
    assert r.json()["usage"]["input_tokens"] == chat.json()["usage"]["input_tokens"]
    assert "six" in "".join(r.json()["output"]["tokens"])
    other = httpx.post(server.base_url + "/api/v1/tokenizer", headers=server.headers("ws-b"),
                       json={"model": "qwen-long", "input": {"messages": messages}})
    assert other.status_code == 400


def test_chinese_file_names_round_trip(server: Server, tmp_path: Path) -> None:
    import dashscope

    created = server.openai().files.create(file=("季度报告.txt", "营收增长".encode()),
                                           purpose="file-extract")
    assert created.filename == "季度报告.txt"
    path = tmp_path / "合同.md"
    path.write_text("# 条款", "utf-8")
    up = dashscope.Files.upload(str(path), purpose="file-extract", api_key=server.keys["ws-a"],
                                base_address=server.base_url + "/api/v1")
    assert up.output["uploaded_files"][0]["name"] == "合同.md"
