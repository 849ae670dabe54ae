"""Native routes: text generation, multimodal generation (text and images), tokenizer, models.

Both generation paths serve every model (the real gateway binds each model to one path;
serving both is more useful and harms no client).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers

from dashserve.api.common import resolves_oss
from dashserve.api.dashscope.convert import (
    NativeStreamRenderer,
    native_body,
    native_view,
    to_generation_request,
)
from dashserve.api.dashscope.protocol import NativeRequest
from dashserve.api.deps import (
    authenticate,
    authenticated_body,
    parse,
    registry_of,
    service_of,
    settings_of,
    start_run,
)
from dashserve.api.errors import request_id_of
from dashserve.api.sse import wants_native_stream
from dashserve.api.streaming import complete_response, sources_of, stream_response
from dashserve.errors import UnsupportedFeature
from dashserve.inspection.header import HEADER as INSPECTION_HEADER
from dashserve.inspection.header import parse_inspection_header

router = APIRouter(prefix="/api/v1")


def check_native_headers(headers: Headers) -> None:
    """Refuse transport modes we do not offer (each would change what the client gets)."""
    if headers.get("x-dashscope-encryptionkey"):
        raise UnsupportedFeature("encrypted requests are not supported by this server",
                                 param="X-DashScope-EncryptionKey")
    if headers.get("x-dashscope-async", "").lower() == "enable":
        raise UnsupportedFeature("text generation has no asynchronous task mode",
                                 param="X-DashScope-Async")
    if headers.get("x-dashscope-plugin"):
        raise UnsupportedFeature("plugins are not available on this server",
                                 param="X-DashScope-Plugin")


async def _generate(request: Request, *, multimodal: bool) -> Response:
    principal, data = await authenticated_body(request)
    check_native_headers(request.headers)
    body = parse(NativeRequest, data)
    served = registry_of(request).get(body.model)
    stream = wants_native_stream(request.headers)
    view = native_view(body.parameters, served.profile, multimodal, stream, body.model)
    inspection = parse_inspection_header(request.headers.get(INSPECTION_HEADER))
    generation = to_generation_request(body, request_id=request_id_of(request), stream=stream,
                                       resolve_oss=resolves_oss(request.headers),
                                       inspection=inspection)
    run = await start_run(request, generation, principal)
    sources, prepend = sources_of(run)
    if stream:
        renderer = NativeStreamRenderer(view, run.request_id,
                                        status_line=settings_of(request).sse_status_line,
                                        search_info=sources, prepend=prepend)
        return stream_response(request, run, renderer)
    return await complete_response(request, run,
                                   lambda done: native_body(done, view, run.request_id, sources))


@router.post("/services/aigc/text-generation/generation")
async def text_generation(request: Request) -> Response:
    return await _generate(request, multimodal=False)


@router.post("/services/aigc/multimodal-generation/generation")
async def multimodal_generation(request: Request) -> Response:
    return await _generate(request, multimodal=True)


@router.post("/tokenizer")
async def tokenize(request: Request) -> JSONResponse:
    """Token ids and token texts of a prompt or chat, planned exactly as a (streamed)
    generation request with the same body would be, so the count is what it bills:
    the chat template, tools, thinking mode, images and the model's own rules all apply."""
    principal, data = await authenticated_body(request)
    body = parse(NativeRequest, data)
    generation = to_generation_request(body, request_id=request_id_of(request), stream=True,
                                       resolve_oss=resolves_oss(request.headers))
    plan = await service_of(request).prepare(generation, principal)
    ids = list(plan.prompt_token_ids)
    tokenizer = plan.served.engine.tokenizer
    tokens = [tokenizer.token_str(i) for i in ids]
    usage: dict[str, int] = {"input_tokens": len(ids)}
    if plan.image_tokens:
        usage["image_tokens"] = plan.image_tokens
    return JSONResponse({"output": {"token_ids": ids, "tokens": tokens},
                         "usage": usage, "request_id": request_id_of(request)})


@router.get("/models")
async def list_models(request: Request, page_no: int = 1, page_size: int = 10,
                      model: str | None = None) -> JSONResponse:
    await authenticate(request, model or "")
    models = registry_of(request).models
    if model is not None:
        models = [m for m in models if m.name == model]
    page_no, page_size = max(1, page_no), max(1, min(page_size, 100))
    page = models[(page_no - 1) * page_size: page_no * page_size]
    items = [{"model": m.name, "name": m.name, "provider": "qwen", "source": "dashserve",
              "opensource": True, "context_length": m.profile.context_length,
              "max_output_tokens": m.profile.max_output_tokens} for m in page]
    return JSONResponse({"request_id": request_id_of(request),
                         "output": {"page_no": page_no, "page_size": page_size,
                                    "total": len(models), "models": items}})
