"""FileService: uploaded documents owned by workspaces — rules, quotas, extraction, lookup.

An upload is checked (name, format, size, quota), its text extracted once off the event
loop (or reused from an identical file the workspace already has), bytes and text written
to the blob store, and only then its row inserted; any failure removes what was written,
so a file either exists completely or not at all. Metadata lives in the platform database
and blobs in a store every server process sees, so a file uploaded through one process is
usable through any other. Chat requests reach the text through ``documents``.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dashserve.errors import InvalidRequest, NotFound, PayloadTooLarge, QuotaExhausted
from dashserve.platform.blobs import BlobStore
from dashserve.platform.extract import ExtractionError, ZipLimits, extract_isolated, format_of
from dashserve.platform.keys import DEFAULT_WORKSPACE, now_utc
from dashserve.store import file_repos
from dashserve.store.db import Store
from dashserve.store.file_repos import FileRow

log = logging.getLogger(__name__)

PURPOSES = ("file-extract",)
MAX_NAME_CHARS = 255


@dataclass(frozen=True, slots=True)
class FileLimits:
    """Per-file and per-workspace caps (DashScope's own: 150 MB a file, 10,000 files and
    100 GB a workspace)."""

    max_file_bytes: int = 150 * 2**20
    max_files_per_workspace: int = 10_000
    max_bytes_per_workspace: int = 100 * 2**30
    zip: ZipLimits = field(default_factory=ZipLimits)
    max_concurrent_extractions: int = 2
    extraction_timeout_s: float = 120.0  # a document that takes longer is refused
    extraction_memory_bytes: int = 4 * 2**30  # address space of one extraction process
    text_cache_chars: int = 64 * 2**20  # extracted text kept in memory, by file id


@dataclass(frozen=True, slots=True)
class Upload:
    """One received file: the client's name and a local temporary copy of its bytes."""

    filename: str
    path: Path
    size: int
    description: str | None = None


def clean_filename(name: str | None) -> str:
    """The last path component of ``name`` without control characters (never a path)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if base in ("", ".", ".."):
        raise InvalidRequest("the uploaded file has no file name", param="file")
    if len(base) > MAX_NAME_CHARS:
        stem, dot, ext = base.rpartition(".")
        keep = MAX_NAME_CHARS - len(ext) - 1 if dot and len(ext) < 16 else MAX_NAME_CHARS
        base = base[:keep] + (("." + ext) if dot and len(ext) < 16 else "")
    return base


def _digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


@dataclass(slots=True)
class _Prepared:
    row: FileRow
    text: str
    upload: Upload


class FileService:
    """The files API's operations for one server process; safe to share across requests."""

    def __init__(self, store: Store, blobs: BlobStore, limits: FileLimits | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.limits = limits or FileLimits()
        self._extracting = asyncio.Semaphore(self.limits.max_concurrent_extractions)
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._cached_chars = 0

    @staticmethod
    def owner(workspace: str | None) -> str:
        return workspace or DEFAULT_WORKSPACE

    # -- upload -------------------------------------------------------------------------

    def _check(self, upload: Upload) -> tuple[str, str]:
        name = clean_filename(upload.filename)
        fmt = format_of(name)
        if fmt is None:
            raise InvalidRequest(
                f"File {name!r}: unsupported file type; supported: TXT, MD, CSV, JSON, JSONL, "
                "HTML, PDF, DOCX, XLSX, PPTX, EPUB", param="file")
        if upload.size == 0:
            raise InvalidRequest(f"File {name!r} is empty", param="file")
        if upload.size > self.limits.max_file_bytes:
            raise PayloadTooLarge(f"File {name!r} is {upload.size} bytes; files may be at most "
                                  f"{self.limits.max_file_bytes} bytes")
        return name, fmt

    async def _check_quota(self, workspace: str, count: int, size: int, *,
                           locked: bool = False) -> None:
        async with self.store.transaction() as s:
            if locked:
                await file_repos.lock_workspace(s, workspace=workspace)
            self._quota_left(workspace, *await file_repos.workspace_usage(s, workspace=workspace),
                             count, size)

    def _quota_left(self, workspace: str, held: int, held_bytes: int, count: int,
                    size: int) -> None:
        if held + count > self.limits.max_files_per_workspace:
            raise QuotaExhausted(f"Workspace {workspace!r} holds {held} files; the limit is "
                                 f"{self.limits.max_files_per_workspace}. Delete files first.")
        if held_bytes + size > self.limits.max_bytes_per_workspace:
            raise QuotaExhausted(f"Workspace {workspace!r} holds {held_bytes} bytes of files; "
                                 f"the limit is {self.limits.max_bytes_per_workspace} bytes. "
                                 "Delete files first.")

    async def _text_of(self, workspace: str, upload: Upload, name: str, fmt: str,
                       sha256: str) -> str:
        async with self.store.transaction() as s:
            twin = await file_repos.find_processed(s, workspace=workspace, sha256=sha256)
        if twin is not None:
            try:
                return await self._load_text(twin)
            except FileNotFoundError:
                pass
        limits = self.limits
        async with self._extracting:
            try:
                return await self._extract(upload.path, fmt)
            except ExtractionError as exc:
                raise InvalidRequest(f"File {name!r} cannot be read: {exc}",
                                     param="file") from None
            except asyncio.TimeoutError:
                raise InvalidRequest(
                    f"File {name!r} cannot be read: reading it took longer than "
                    f"{limits.extraction_timeout_s:g} s", param="file") from None

    async def _extract(self, path: Path, fmt: str) -> str:
        """The document's text, read in a child process (time and memory capped)."""
        limits = self.limits
        return await extract_isolated(path, fmt, limits.zip,
                                      timeout_s=limits.extraction_timeout_s,
                                      max_memory_bytes=limits.extraction_memory_bytes)

    async def _prepare(self, workspace: str, upload: Upload, purpose: str) -> _Prepared:
        name, fmt = self._check(upload)
        md5, sha256 = await asyncio.to_thread(_digests, upload.path)
        text = await self._text_of(workspace, upload, name, fmt, sha256)
        file_id = "file-fe-" + uuid.uuid4().hex[:24]
        status, details = "processed", None
        if not text.strip():
            status, details = "error", "no text could be extracted from the file"
        row = FileRow(
            id=file_id, workspace=workspace, filename=name, purpose=purpose,
            description=upload.description, bytes=upload.size, md5=md5, sha256=sha256,
            format=fmt, status=status, status_details=details, text_chars=len(text),
            blob_key=file_id, created_at=now_utc())
        return _Prepared(row, text, upload)

    async def upload(self, workspace: str | None, uploads: Sequence[Upload], *,
                     purpose: str = "file-extract") -> list[FileRow]:
        """Store every upload, or none of them (the first problem is raised)."""
        owner = self.owner(workspace)
        if purpose not in PURPOSES:
            raise InvalidRequest(f"Unsupported purpose {purpose!r}; supported: "
                                 + ", ".join(PURPOSES), param="purpose")
        if not uploads:
            raise InvalidRequest("No file was uploaded", param="file")
        for upload in uploads:
            self._check(upload)
        total = sum(u.size for u in uploads)
        await self._check_quota(owner, len(uploads), total)
        prepared = [await self._prepare(owner, u, purpose) for u in uploads]
        written: list[str] = []
        try:
            for p in prepared:
                written.append(p.row.blob_key)
                await asyncio.to_thread(self._write_blobs, p)
            async with self.store.transaction() as s:
                await file_repos.lock_workspace(s, workspace=owner)
                self._quota_left(owner, *await file_repos.workspace_usage(s, workspace=owner),
                                 len(uploads), total)
                for p in prepared:
                    await file_repos.insert_file(s, row=p.row)
        except BaseException:
            for key in written:
                await asyncio.to_thread(self.blobs.delete_prefix, key)
            raise
        for p in prepared:
            self._remember(p.row.id, p.text)
            log.info("file %s uploaded: %s, %d bytes, %s, %d characters", p.row.id,
                     p.row.format, p.row.bytes, p.row.status, p.row.text_chars)
        return [p.row for p in prepared]

    def _write_blobs(self, p: _Prepared) -> None:
        self.blobs.put_file(f"{p.row.blob_key}/original", p.upload.path)
        self.blobs.put_bytes(f"{p.row.blob_key}/text", p.text.encode("utf-8"))

    # -- reading ------------------------------------------------------------------------

    async def get(self, workspace: str | None, file_id: str) -> FileRow:
        async with self.store.transaction() as s:
            row = await file_repos.get_file(s, workspace=self.owner(workspace), file_id=file_id)
        if row is None:
            raise NotFound(f"File [id:{file_id}] not found.", param="file_id")
        return row

    async def content(self, workspace: str | None, file_id: str) -> tuple[FileRow, bytes]:
        row = await self.get(workspace, file_id)
        try:
            data = await asyncio.to_thread(self.blobs.get_bytes, f"{row.blob_key}/original")
        except FileNotFoundError:
            raise NotFound(f"The content of file [id:{file_id}] is gone.",
                           param="file_id") from None
        return row, data

    async def list(self, workspace: str | None, *, limit: int, after: str | None = None,
                   descending: bool = True, purpose: str | None = None
                   ) -> tuple[list[FileRow], bool]:
        """A page of the workspace's files after the file ``after``, and whether more follow."""
        owner = self.owner(workspace)
        async with self.store.transaction() as s:
            start = None
            if after is not None:
                start = await file_repos.get_file(s, workspace=owner, file_id=after)
                if start is None:
                    raise InvalidRequest(f"File [id:{after}] not found.", param="after")
            rows = await file_repos.list_files(s, workspace=owner, limit=limit + 1, after=start,
                                               descending=descending, purpose=purpose)
        return rows[:limit], len(rows) > limit

    async def page(self, workspace: str | None, *, page_no: int,
                   page_size: int) -> tuple[builtins.list[FileRow], int]:
        """Page ``page_no`` (from 1) of the workspace's files, newest first, and the total."""
        owner = self.owner(workspace)
        async with self.store.transaction() as s:
            total, _ = await file_repos.workspace_usage(s, workspace=owner)
            rows = await file_repos.list_files(s, workspace=owner, limit=page_size,
                                               offset=(page_no - 1) * page_size)
        return rows, total

    async def delete(self, workspace: str | None, file_id: str) -> FileRow:
        async with self.store.transaction() as s:
            row = await file_repos.delete_file(s, workspace=self.owner(workspace),
                                               file_id=file_id)
        if row is None:
            raise NotFound(f"File [id:{file_id}] not found.", param="file_id")
        self._forget(file_id)
        await asyncio.to_thread(self.blobs.delete_prefix, row.blob_key)
        log.info("file %s deleted", file_id)
        return row

    # -- documents for chat (serving.documents.DocumentSource) --------------------------

    async def documents(self, workspace: str | None,
                        file_ids: Sequence[str]) -> builtins.list[str]:
        """The extracted text of each file, in order; 400 for a file the workspace does not
        have or one that holds no text."""
        owner = self.owner(workspace)
        async with self.store.transaction() as s:
            rows = await file_repos.get_files(s, workspace=owner, file_ids=list(file_ids))
        texts: list[str] = []
        for file_id in file_ids:
            row = rows.get(file_id)
            if row is None:
                raise InvalidRequest(f"File [id:{file_id}] not found.",
                                     param="messages")
            if row.status != "processed":
                raise InvalidRequest(
                    f"File [id:{file_id}] is not ready for use: its status is {row.status!r}"
                    f" ({row.status_details or 'not processed'}).", param="messages")
            try:
                texts.append(await self._load_text(row))
            except FileNotFoundError:
                log.error("file %s is in the database but its text is not in the files "
                          "directory: do all server processes share --files-dir?", file_id)
                raise InvalidRequest(f"File [id:{file_id}] not found.",
                                     param="messages") from None
        return texts

    async def _load_text(self, row: FileRow) -> str:
        text = self._texts.get(row.id)
        if text is not None:
            self._texts.move_to_end(row.id)
            return text
        data = await asyncio.to_thread(self.blobs.get_bytes, f"{row.blob_key}/text")
        text = data.decode("utf-8")
        self._remember(row.id, text)
        return text

    def _remember(self, file_id: str, text: str) -> None:
        if len(text) > self.limits.text_cache_chars:
            return
        self._forget(file_id)
        self._texts[file_id] = text
        self._cached_chars += len(text)
        while self._cached_chars > self.limits.text_cache_chars:
            _, old = self._texts.popitem(last=False)
            self._cached_chars -= len(old)

    def _forget(self, file_id: str) -> None:
        old = self._texts.pop(file_id, None)
        if old is not None:
            self._cached_chars -= len(old)
