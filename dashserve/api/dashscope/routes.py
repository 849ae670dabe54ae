"""Native routes: text generation, multimodal generation (text content for now), tokenizer, models.

Both generation paths serve every model (the real gateway binds each model to one path;
serving both is more useful and harms no client).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers

from dashserve.api.dashscope.convert import (
    NativeStreamRenderer,
    native_body,
    native_messages,
    native_view,
    to_generation_request,
)
from dashserve.api.dashscope.protocol import NativeRequest, TokenizeRequest
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
from dashserve.api.streaming import complete_response, stream_response
from dashserve.errors import UnsupportedFeature
from dashserve.serving.prompt import build_prompt

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
    view = native_view(body.parameters, served.profile, multimodal, stream)
    generation = to_generation_request(body, request_id=request_id_of(request), stream=stream)
    run = await start_run(request, generation, principal)
    if stream:
        renderer = NativeStreamRenderer(view, run.request_id,
                                        status_line=settings_of(request).sse_status_line)
        return stream_response(request, run, renderer)
    return await complete_response(request, run,
                                   lambda done: native_body(done, view, run.request_id))


@router.post("/services/aigc/text-generation/generation")
async def text_generation(request: Request) -> Response:
    return await _generate(request, multimodal=False)


@router.post("/services/aigc/multimodal-generation/generation")
async def multimodal_generation(request: Request) -> Response:
    return await _generate(request, multimodal=True)


@router.post("/tokenizer")
async def tokenize(request: Request) -> JSONResponse:
    """Token ids and token texts of a prompt or chat (chat template applied, as billed)."""
    _, data = await authenticated_body(request)
    body = parse(TokenizeRequest, data)
    served = registry_of(request).get(body.model)
    tokenizer = served.engine.tokenizer
    thinking = body.parameters.get("enable_thinking", served.profile.enable_thinking)
    ids = await service_of(request).off_loop(
        lambda: build_prompt(tokenizer, native_messages(body.input), enable_thinking=bool(thinking)))
    tokens = [tokenizer.token_str(i) for i in ids]
    return JSONResponse({"output": {"token_ids": ids, "tokens": tokens},
                         "usage": {"input_tokens": len(ids)},
                         "request_id": request_id_of(request)})


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
