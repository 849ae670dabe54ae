"""GET /health: 200 once every model is loaded, 503 (with the reason) before and after."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dashserve.api.deps import registry_of, service_of

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    registry = registry_of(request)
    body = {"status": registry.state.value, "detail": registry.detail,
            "models": [m.name for m in registry.models],
            "requests_in_flight": service_of(request).num_inflight}
    healthy = registry.is_ready
    dead = registry.dead_engines if healthy else []
    if dead:
        healthy = False
        body.update(status="failed", detail=f"engine stopped for {', '.join(dead)}")
    return JSONResponse(body, status_code=200 if healthy else 503)
