"""Receiving multipart uploads: size-capped while they stream in, spooled to temporary files.

The body is counted as it arrives (a declared ``Content-Length`` over the cap is refused
before reading), so an oversized upload is cut off early instead of filling the disk.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from dashserve.errors import InvalidRequest, PayloadTooLarge
from dashserve.platform.files import Upload

FORM_OVERHEAD_BYTES = 1 << 20  # room for the multipart framing and the small fields


def _capped(request: Request, limit: int) -> Request:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The upload is {declared} bytes; at most {limit} are accepted.")
    seen = 0
    receive = request.receive

    async def capped_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"The upload exceeds {limit} bytes.")
        return message

    return Request(request.scope, capped_receive)


@asynccontextmanager
async def read_form(request: Request, *, limit: int, max_files: int
                    ) -> AsyncIterator[FormData]:
    """The multipart form of ``request`` (400 if it is not one, 413 past ``limit`` bytes);
    its spooled files are closed on exit."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidRequest("Files must be uploaded as multipart/form-data, "
                             f"not {content_type or 'an empty content type'!r}", param="file")
    form = await _capped(request, limit + FORM_OVERHEAD_BYTES).form(
        max_files=max_files, max_fields=100)
    try:
        yield form
    finally:
        await form.close()


def _field_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a form field, not a file", param=name)
    return value


def text_field(form: FormData, name: str) -> str | None:
    return _field_text(form.get(name), name)


def text_fields(form: FormData, name: str) -> list[str]:
    return [t for t in (_field_text(v, name) for v in form.getlist(name)) if t is not None]


def file_fields(form: FormData, name: str) -> list[UploadFile]:
    values = form.getlist(name)
    for value in values:
        if not isinstance(value, UploadFile):
            raise InvalidRequest(f"'{name}' must be a file part with a file name", param=name)
    return list(values)  # type: ignore[arg-type]


@asynccontextmanager
async def spooled(files: list[UploadFile], descriptions: list[str] | None = None
                  ) -> AsyncIterator[list[Upload]]:
    """Local copies of the uploaded files, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="dashserve-upload-") as tmp:
        uploads: list[Upload] = []
        for i, part in enumerate(files):
            path = Path(tmp) / str(i)

            def copy(src: Any = part.file, dst: Path = path) -> int:
                src.seek(0)
                with dst.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                return dst.stat().st_size

            size = await asyncio.to_thread(copy)
            description = descriptions[i] if descriptions and i < len(descriptions) else None
            uploads.append(Upload(part.filename or "", path, size, description))
        yield uploads
