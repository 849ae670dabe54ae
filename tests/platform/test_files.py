"""FileService on SQLite and PostgreSQL: upload, list, get, delete, quotas, workspaces,
text extracted once, nothing stored half-way."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashserve.errors import InvalidRequest, NotFound, PayloadTooLarge, QuotaExhausted
from dashserve.platform import files as files_module
from dashserve.platform.blobs import LocalBlobStore
from dashserve.platform.files import FileLimits, FileService, Upload, clean_filename
from dashserve.store.db import Store
from tests.utils.documents import docx_bytes, pdf_bytes, write, zip_bomb


def upload(tmp_path: Path, name: str, data: bytes | str, description: str | None = None
           ) -> Upload:
    path = write(tmp_path / f"u{len(list(tmp_path.iterdir()))}", data)
    return Upload(name, path, path.stat().st_size, description)


@pytest.fixture
def blob_root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    out = tmp_path / "spool"
    out.mkdir()
    return out


def service(store: Store, root: Path, **limits: int) -> FileService:
    return FileService(store, LocalBlobStore(root), FileLimits(**limits))


def blobs_in(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


async def test_upload_get_list_delete(store: Store, blob_root: Path, spool: Path) -> None:
    files = service(store, blob_root)
    (pdf,) = await files.upload("ws-1", [upload(spool, "report.pdf", pdf_bytes(["Profit up"]))])
    assert pdf.id.startswith("file-fe-") and pdf.status == "processed"
    assert (pdf.filename, pdf.format, pdf.workspace) == ("report.pdf", "pdf", "ws-1")
    assert blobs_in(blob_root) == [f"{pdf.id}/original", f"{pdf.id}/text"]
    (txt,) = await files.upload("ws-1", [upload(spool, "notes.txt", "plain notes")])
    assert (await files.get("ws-1", pdf.id)).bytes == pdf.bytes
    row, data = await files.content("ws-1", pdf.id)
    assert data == pdf_bytes(["Profit up"]) and row.md5 == pdf.md5
    rows, more = await files.list("ws-1", limit=1)
    assert [r.id for r in rows] == [txt.id] and more  # newest first
    rows, more = await files.list("ws-1", limit=5, after=txt.id)
    assert [r.id for r in rows] == [pdf.id] and not more
    rows, more = await files.list("ws-1", limit=5, descending=False)
    assert [r.id for r in rows] == [pdf.id, txt.id]
    page, total = await files.page("ws-1", page_no=2, page_size=1)
    assert total == 2 and [r.id for r in page] == [pdf.id]
    assert await files.documents("ws-1", [pdf.id, txt.id]) == ["Profit up", "plain notes"]
    await files.delete("ws-1", pdf.id)
    with pytest.raises(NotFound):
        await files.get("ws-1", pdf.id)
    with pytest.raises(InvalidRequest, match="not found"):
        await files.documents("ws-1", [pdf.id])
    assert blobs_in(blob_root) == [f"{txt.id}/original", f"{txt.id}/text"]


async def test_workspaces_do_not_see_each_other(store: Store, blob_root: Path,
                                                spool: Path) -> None:
    files = service(store, blob_root)
    (row,) = await files.upload("ws-a", [upload(spool, "a.txt", "secret plan")])
    with pytest.raises(NotFound):
        await files.get("ws-b", row.id)
    with pytest.raises(NotFound):
        await files.delete("ws-b", row.id)
    with pytest.raises(InvalidRequest, match="not found"):
        await files.documents("ws-b", [row.id])
    assert (await files.list("ws-b", limit=10)) == ([], False)
    assert await files.documents("ws-a", [row.id]) == ["secret plan"]  # still there
    (default,) = await files.upload(None, [upload(spool, "d.txt", "x")])
    assert default.workspace == "default" and await files.documents("default", [default.id])


async def test_identical_bytes_are_extracted_once(store: Store, blob_root: Path, spool: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = files_module.extract_isolated

    async def counting(path: Path, fmt: str, *args: object, **kwargs: object) -> str:
        calls.append(fmt)
        return await real(path, fmt, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(files_module, "extract_isolated", counting)
    files = service(store, blob_root)
    data = docx_bytes(["Clause 1: be kind."])
    (first,) = await files.upload("ws", [upload(spool, "a.docx", data)])
    (second,) = await files.upload("ws", [upload(spool, "copy.docx", data)])
    assert calls == ["docx"] and first.id != second.id
    fresh = service(store, blob_root)  # another process: no memory of the text
    assert await fresh.documents("ws", [second.id]) == ["Clause 1: be kind."]
    await files.upload("other-ws", [upload(spool, "a.docx", data)])
    assert calls == ["docx", "docx"]  # nothing is shared across workspaces


async def test_bad_uploads_store_nothing(store: Store, blob_root: Path, spool: Path) -> None:
    files = service(store, blob_root, max_file_bytes=1000)
    cases = [
        ([upload(spool, "empty.txt", b"")], InvalidRequest, "empty"),
        ([upload(spool, "big.txt", "x" * 1001)], PayloadTooLarge, "at most 1000"),
        ([upload(spool, "photo.png", b"\x89PNG")], InvalidRequest, "unsupported file type"),
        ([upload(spool, "broken.pdf", b"%PDF-1.4 nothing else")], InvalidRequest, "PDF"),
        ([upload(spool, "broken.docx", b"PK\x03\x04")], InvalidRequest, "cannot be read"),
        ([upload(spool, "ok.txt", "fine"), upload(spool, "bad.json", "{")], InvalidRequest,
         "not valid JSON"),
        ([upload(spool, "..", "x")], InvalidRequest, "no file name"),
    ]
    for uploads, error, message in cases:
        with pytest.raises(error, match=message):
            await files.upload("ws", uploads)
    with pytest.raises(InvalidRequest, match="purpose"):
        await files.upload("ws", [upload(spool, "a.txt", "x")], purpose="fine-tune")
    big = service(store, blob_root)
    with pytest.raises(InvalidRequest, match="zip bomb"):
        await big.upload("ws", [upload(spool, "bomb.docx", zip_bomb())])
    assert (await files.list("ws", limit=10)) == ([], False)
    assert blobs_in(blob_root) == []


async def test_quota_on_count_and_bytes(store: Store, blob_root: Path, spool: Path) -> None:
    files = service(store, blob_root, max_files_per_workspace=2, max_bytes_per_workspace=100)
    await files.upload("ws", [upload(spool, "a.txt", "a" * 40)])
    with pytest.raises(QuotaExhausted, match="bytes"):
        await files.upload("ws", [upload(spool, "b.txt", "b" * 61)])
    await files.upload("ws", [upload(spool, "b.txt", "b" * 60)])
    with pytest.raises(QuotaExhausted, match="2 files"):
        await files.upload("ws", [upload(spool, "c.txt", "c")])
    await files.upload("ws-2", [upload(spool, "c.txt", "c")])  # per workspace
    rows, _ = await files.list("ws", limit=10)
    await files.delete("ws", rows[0].id)
    await files.upload("ws", [upload(spool, "c.txt", "c")])  # room again


async def test_a_document_without_text_is_stored_as_error(store: Store, blob_root: Path,
                                                          spool: Path) -> None:
    files = service(store, blob_root)
    (row,) = await files.upload("ws", [upload(spool, "blank.pdf", pdf_bytes([]))])
    assert row.status == "error" and "no text" in (row.status_details or "")
    with pytest.raises(InvalidRequest, match="not ready"):
        await files.documents("ws", [row.id])


def test_file_names_lose_their_paths() -> None:
    assert clean_filename("../../etc/passwd.txt") == "passwd.txt"
    assert clean_filename("C:\\Users\\me\\report.pdf") == "report.pdf"
    assert clean_filename("bad\x00name\n.md") == "badname.md"
    long = clean_filename("a" * 400 + ".docx")
    assert len(long) == 255 and long.endswith(".docx")
    for bad in ("", "/", "..", "dir/.."):
        with pytest.raises(InvalidRequest):
            clean_filename(bad)


async def test_a_document_that_takes_too_long_is_refused(store: Store, blob_root: Path,
                                                         spool: Path) -> None:
    files = FileService(store, LocalBlobStore(blob_root), FileLimits(extraction_timeout_s=0.001))
    with pytest.raises(InvalidRequest, match="took longer than 0.001 s"):
        await files.upload("ws", [upload(spool, "a.txt", "x")])
    assert (await files.list("ws", limit=10)) == ([], False)
    assert blobs_in(blob_root) == []
