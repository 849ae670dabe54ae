"""OpenAI-compatible routes: chat completions (stream and not) and the model list."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from dashserve.api.common import resolves_oss
from dashserve.api.deps import (
    authenticate,
    authenticated_body,
    parse,
    registry_of,
    start_run,
)
from dashserve.api.errors import request_id_of
from dashserve.api.openai.convert import (
    OpenAIStreamRenderer,
    openai_body,
    to_generation_request,
)
from dashserve.api.openai.protocol import ChatCompletionRequest
from dashserve.api.streaming import complete_response, sources_of, stream_response
from dashserve.errors import ModelNotFound
from dashserve.inspection.header import HEADER as INSPECTION_HEADER
from dashserve.inspection.header import parse_inspection_header
from dashserve.serving.registry import ServedModel

router = APIRouter(prefix="/compatible-mode/v1")


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    principal, data = await authenticated_body(request)
    body = parse(ChatCompletionRequest, data)
    inspection = parse_inspection_header(request.headers.get(INSPECTION_HEADER))
    generation = to_generation_request(body, request_id=request_id_of(request),
                                       resolve_oss=resolves_oss(request.headers),
                                       inspection=inspection)
    run = await start_run(request, generation, principal)
    created = int(time.time())
    logprobs = bool(body.logprobs)
    sources, prepend = sources_of(run)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        renderer = OpenAIStreamRenderer(request_id=run.request_id, model=body.model,
                                        created=created, logprobs=logprobs,
                                        include_usage=include_usage, search_info=sources,
                                        prepend=prepend)
        return stream_response(request, run, renderer)
    return await complete_response(request, run, lambda done: openai_body(
        done, request_id=run.request_id, model=body.model, created=created, logprobs=logprobs,
        search_info=sources))


def _model_object(model: ServedModel) -> dict[str, Any]:
    """The model card; ``input_modalities`` says whether it reads images and videos."""
    vision = model.engine.model_info.vision is not None
    return {"id": model.name, "object": "model", "created": model.created,
            "owned_by": "dashserve",
            "input_modalities": ["text", "image", "video"] if vision else ["text"]}


@router.get("/models")
async def list_models(request: Request) -> JSONResponse:
    await authenticate(request, "")
    data = [_model_object(m) for m in registry_of(request).models]
    return JSONResponse({"object": "list", "data": data})


@router.get("/models/{model_id:path}")
async def get_model(request: Request, model_id: str) -> JSONResponse:
    await authenticate(request, model_id)
    model = registry_of(request).find(model_id)
    if model is None:
        raise ModelNotFound(param="model")
    return JSONResponse(_model_object(model))
