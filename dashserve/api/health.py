"""GET /health: 200 once every model is loaded and warmed up, 503 before (``detail`` says which
stage start-up is in) and while stopping."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dashserve.api.deps import registry_of, service_of

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    registry = registry_of(request)
    detail = registry.detail
    if registry.is_ready and any(getattr(e, "kernels_pending", False) for e in registry.engines):
        detail += "; native CPU kernels building in the background (the torch path serves)"
    body = {"status": registry.state.value, "detail": detail,
            "models": [m.name for m in registry.models],
            "requests_in_flight": service_of(request).num_inflight}
    healthy = registry.is_ready
    dead = registry.dead_engines if healthy else []
    if dead:
        healthy = False
        body.update(status="failed", detail=f"engine stopped for {', '.join(dead)}")
    return JSONResponse(body, status_code=200 if healthy else 503)
