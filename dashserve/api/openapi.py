"""``GET /openapi.json``: the schema of both APIs, with the request bodies the routes read.

The generation routes read their bodies themselves (authentication comes before validation),
so FastAPI cannot see them; their pydantic models are added here, which lets schema-driven
tools (schemathesis, client generators) drive the server.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from dashserve.api.dashscope.protocol import NativeRequest
from dashserve.api.openai.protocol import ChatCompletionRequest

REF = "#/components/schemas/{model}"
BODIES: dict[str, type[BaseModel]] = {
    "/api/v1/services/aigc/text-generation/generation": NativeRequest,
    "/api/v1/services/aigc/multimodal-generation/generation": NativeRequest,
    "/api/v1/tokenizer": NativeRequest,
    "/compatible-mode/v1/chat/completions": ChatCompletionRequest,
}


def install_openapi(app: FastAPI) -> None:
    """Serve the schema at ``/openapi.json`` (built once, on first use)."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app)
        return app.openapi_schema

    app.openapi_url = "/openapi.json"
    app.openapi = schema  # type: ignore[method-assign]
    app.setup()  # registers the /openapi.json route


def build_schema(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(title="dashserve", version="1", routes=app.routes,
                       description="DashScope native and OpenAI-compatible APIs")
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    security = {"bearer": {"type": "http", "scheme": "bearer"}}
    spec["components"].setdefault("securitySchemes", {}).update(security)
    for path, model in BODIES.items():
        operation = spec.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            continue
        body = model.model_json_schema(ref_template=REF)
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}}
        operation["security"] = [{"bearer": []}]
    return spec
