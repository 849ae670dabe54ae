"""The dashscope SDK's upload of local files: ``GET /api/v1/uploads`` and the form POST.

``MultiModalConversation.call`` with a local path asks for an upload policy, POSTs the file
as a form (no API key) to the policy's ``upload_host`` and sends ``oss://<key>`` in its
place. Here the upload host is this server (``public_url``, else the request's base URL);
see ``dashserve.media.uploads`` for what the policy binds.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from dashserve.api.deps import authenticate, service_of, settings_of
from dashserve.api.errors import request_id_of
from dashserve.errors import InvalidRequest, PayloadTooLarge
from dashserve.media.uploads import UploadStore

router = APIRouter(prefix="/api/v1")
UPLOAD_PATH = "/api/v1/uploads/oss"
FORM_OVERHEAD = 64 * 1024  # form fields and boundaries around the file


def upload_store(request: Request) -> UploadStore:
    store = service_of(request).images.config.uploads
    if store is None:
        raise InvalidRequest("uploads are not enabled on this server", param="action")
    return store


@router.get("/uploads")
async def get_policy(request: Request, action: str = "", model: str = "") -> JSONResponse:
    """An upload policy for the caller's workspace (the SDK's ``getPolicy``)."""
    principal = await authenticate(request, model)
    if action != "getPolicy":
        raise InvalidRequest("action must be getPolicy", param="action")
    base = settings_of(request).public_url or str(request.base_url)
    policy = upload_store(request).issue(principal.workspace, base.rstrip("/") + UPLOAD_PATH)
    return JSONResponse({"request_id": request_id_of(request), "data": policy.as_output()})


def _field(form: object, name: str) -> str:
    value = form.get(name)  # type: ignore[attr-defined]
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"the form field {name!r} is missing", param=name)
    return value


@router.post("/uploads/oss")
async def upload(request: Request) -> Response:
    """Store one file posted under a signed policy (no API key: the policy is the grant)."""
    store = upload_store(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > store.max_bytes + FORM_OVERHEAD:
        raise PayloadTooLarge(f"the file is larger than {store.max_bytes} bytes")
    form = await request.form(max_files=1, max_fields=16)
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidRequest("the form has no file", param="file")
        data = await file.read(store.max_bytes + 1)
        store.check(_field(form, "policy"), _field(form, "Signature"), _field(form, "key"),
                    len(data))
        store.save(_field(form, "key"), data)
    finally:
        await form.close()
    return Response(status_code=200)
