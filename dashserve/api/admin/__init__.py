"""Admin HTTP API (keys, usage; admin key only) and the Prometheus ``/metrics`` endpoint."""

from __future__ import annotations

from dashserve.api.admin.routes import admin_router, metrics_router

__all__ = ["admin_router", "metrics_router"]
