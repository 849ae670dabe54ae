"""Files routes: upload, list, retrieve, content, delete — compatible mode and native.

Handlers only translate: the caller's workspace comes from the gate, every rule lives in
``platform.files.FileService`` (``app.state.files``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from dashserve.api.deps import authenticate
from dashserve.api.errors import request_id_of
from dashserve.api.files import protocol
from dashserve.api.files.uploads import file_fields, read_form, spooled, text_field, text_fields
from dashserve.errors import InvalidRequest, NotFound
from dashserve.platform.files import FileService
from dashserve.platform.gate import Principal

compat_router = APIRouter(prefix="/compatible-mode/v1/files")
native_router = APIRouter(prefix="/api/v1/files")
MAX_NATIVE_FILES = 10


async def _caller(request: Request) -> tuple[Principal, FileService]:
    principal = await authenticate(request, "")
    files: FileService | None = getattr(request.app.state, "files", None)
    if files is None:
        raise NotFound("The files API is not enabled on this server.")
    return principal, files


# -- compatible mode (openai SDK: client.files) -------------------------------------------

@compat_router.post("")
async def create_file(request: Request) -> JSONResponse:
    principal, files = await _caller(request)
    async with read_form(request, limit=files.limits.max_file_bytes, max_files=1) as form:
        purpose = text_field(form, "purpose")
        if purpose is None:
            raise InvalidRequest("Required parameter 'purpose' missing.", param="purpose")
        parts = file_fields(form, "file")
        if len(parts) != 1:
            raise InvalidRequest("Exactly one 'file' part is required.", param="file")
        async with spooled(parts) as uploads:
            (row,) = await files.upload(principal.workspace, uploads, purpose=purpose)
    return JSONResponse(protocol.openai_file(row))


@compat_router.get("")
async def list_files(request: Request, after: str | None = None,
                     limit: int = Query(10_000, ge=1, le=10_000),
                     order: Literal["asc", "desc"] = "desc",
                     purpose: str | None = None) -> JSONResponse:
    principal, files = await _caller(request)
    rows, has_more = await files.list(principal.workspace, limit=limit, after=after,
                                      descending=order == "desc", purpose=purpose)
    return JSONResponse(protocol.openai_list(rows, has_more))


@compat_router.get("/{file_id}")
async def retrieve_file(request: Request, file_id: str) -> JSONResponse:
    principal, files = await _caller(request)
    return JSONResponse(protocol.openai_file(await files.get(principal.workspace, file_id)))


@compat_router.get("/{file_id}/content")
async def file_content(request: Request, file_id: str) -> Response:
    principal, files = await _caller(request)
    row, data = await files.content(principal.workspace, file_id)
    return Response(data, media_type="application/octet-stream",
                    headers={"content-disposition": f'attachment; filename="{row.id}"'})


@compat_router.delete("/{file_id}")
async def delete_file(request: Request, file_id: str) -> JSONResponse:
    principal, files = await _caller(request)
    return JSONResponse(protocol.openai_deleted(await files.delete(principal.workspace, file_id)))


# -- native (dashscope.Files) ---------------------------------------------------------------

@native_router.post("")
async def native_upload(request: Request) -> JSONResponse:
    principal, files = await _caller(request)
    async with read_form(request, limit=files.limits.max_file_bytes * MAX_NATIVE_FILES,
                         max_files=MAX_NATIVE_FILES) as form:
        parts = file_fields(form, "files") or file_fields(form, "file")
        if not parts:
            raise InvalidRequest("Required parameter 'files' missing.", param="files")
        purpose = text_field(form, "purpose") or "file-extract"
        async with spooled(parts, text_fields(form, "descriptions")) as uploads:
            rows = await files.upload(principal.workspace, uploads, purpose=purpose)
    return JSONResponse(protocol.native_uploaded(rows, request_id_of(request)))


@native_router.get("")
async def native_list(request: Request, page_no: int = Query(1, ge=1),
                      page_size: int = Query(10, ge=1, le=100)) -> JSONResponse:
    principal, files = await _caller(request)
    rows, total = await files.page(principal.workspace, page_no=page_no, page_size=page_size)
    return JSONResponse(protocol.native_page(rows, total=total, page_no=page_no,
                                             page_size=page_size,
                                             request_id=request_id_of(request)))


@native_router.get("/{file_id}")
async def native_get(request: Request, file_id: str) -> JSONResponse:
    principal, files = await _caller(request)
    with native_not_found():
        row = await files.get(principal.workspace, file_id)
    return JSONResponse({"request_id": request_id_of(request), "data": protocol.native_file(row)})


@native_router.delete("/{file_id}")
async def native_delete(request: Request, file_id: str) -> JSONResponse:
    principal, files = await _caller(request)
    with native_not_found():
        row = await files.delete(principal.workspace, file_id)
    return JSONResponse({"request_id": request_id_of(request),
                         "data": {"file_id": row.id, "deleted": True}})


@contextmanager
def native_not_found() -> Iterator[None]:
    """The native API reports a missing file as 400 ``InvalidParameter`` ("File ... not
    found."), as DashScope does; compatible mode answers 404 as the openai SDK expects."""
    try:
        yield
    except NotFound as exc:
        raise InvalidRequest(exc.message, param=exc.param) from None
