"""Wire shapes of the files API: the OpenAI file object and list, the native ``data`` payloads.

Compatible mode answers as the openai SDK's ``files`` methods expect (``FileObject``, a
cursor page with ``has_more``); the native routes answer as ``dashscope.Files`` reads them
(the payload under ``data``, next to ``request_id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dashserve.store.file_repos import FileRow


def openai_file(row: FileRow) -> dict[str, Any]:
    return {"id": row.id, "object": "file", "bytes": row.bytes,
            "created_at": int(row.created_at.timestamp()), "filename": row.filename,
            "purpose": row.purpose, "status": row.status,
            "status_details": row.status_details}


def openai_list(rows: Sequence[FileRow], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": [openai_file(r) for r in rows], "has_more": has_more,
            "first_id": rows[0].id if rows else None, "last_id": rows[-1].id if rows else None}


def openai_deleted(row: FileRow) -> dict[str, Any]:
    return {"id": row.id, "object": "file", "deleted": True}


def native_file(row: FileRow) -> dict[str, Any]:
    return {"file_id": row.id, "name": row.filename, "description": row.description or "",
            "size": row.bytes, "md5": row.md5, "purpose": row.purpose, "status": row.status,
            "status_details": row.status_details, "uploaded_at": _stamp(row),
            "gmt_create": _stamp(row)}


def _stamp(row: FileRow) -> str:
    return row.created_at.strftime("%Y-%m-%d %H:%M:%S")


def native_uploaded(rows: Sequence[FileRow], request_id: str) -> dict[str, Any]:
    return {"request_id": request_id,
            "data": {"uploaded_files": [{"file_id": r.id, "name": r.filename,
                                         "purpose": r.purpose, "size": r.bytes,
                                         "uploaded_at": _stamp(r)} for r in rows],
                     "failed_uploads": []}}


def native_page(rows: Sequence[FileRow], *, total: int, page_no: int, page_size: int,
                request_id: str) -> dict[str, Any]:
    return {"request_id": request_id,
            "data": {"total": total, "page_no": page_no, "page_size": page_size,
                     "files": [native_file(r) for r in rows]}}
