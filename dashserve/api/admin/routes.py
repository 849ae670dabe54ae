"""Admin routes (``/admin/v1/keys``, ``/admin/v1/usage``) and ``GET /metrics``.

Both routers read ``request.app.state.platform`` (a ``PlatformState``). Admin routes need an
admin key in ``Authorization: Bearer`` (a bare key is refused, as on the generation APIs); a
database outage is a 503 ``ServiceUnavailable``; errors are raised as ``DashServeError`` and rendered by
the app's exception handlers.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from dashserve.api.admin.protocol import (
    CreatedKey,
    CreateKeyRequest,
    KeyInfo,
    KeyList,
    UsageRecords,
    UsageReport,
)
from dashserve.api.admin.self_routes import self_router
from dashserve.platform.gate import Principal
from dashserve.platform.keys import KeySpec, describe_key
from dashserve.platform.reports import (
    UsageQuery,
    recent_records,
    resolve_key_ref,
    usage_report,
)
from dashserve.platform.state import PlatformState
from dashserve.platform.timespec import parse_time


def _platform(request: Request) -> PlatformState:
    return request.app.state.platform  # type: ignore[no-any-return]


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":  # a bare key is refused, as on the generation APIs
        return None
    return token.strip() or None


async def _admin(
    platform: Annotated[PlatformState, Depends(_platform)],
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    return await platform.gate.authenticate_admin(bearer_token(authorization))


PlatformDep = Annotated[PlatformState, Depends(_platform)]
AdminDep = Annotated[Principal, Depends(_admin)]


async def create_key(body: CreateKeyRequest, platform: PlatformDep, _: AdminDep) -> CreatedKey:
    expires = parse_time(body.expires, future=True, param="expires") if body.expires else None
    spec = KeySpec(
        name=body.name, workspace=body.workspace,
        allowed_models=tuple(body.models) if body.models else None, rpm=body.rpm, tpm=body.tpm,
        max_concurrency=body.max_concurrency, expires_at=expires, is_admin=body.is_admin,
    )
    issued = await platform.keys.create(spec)
    return CreatedKey(**describe_key(issued.key), secret=issued.secret)


async def list_keys(
    platform: PlatformDep, _: AdminDep, include_revoked: bool = False,
    workspace: str | None = None,
) -> KeyList:
    rows = await platform.keys.list_keys(include_revoked=include_revoked, workspace=workspace)
    return KeyList(data=[KeyInfo(**describe_key(r)) for r in rows])


async def get_key(key_ref: str, platform: PlatformDep, _: AdminDep) -> KeyInfo:
    return KeyInfo(**describe_key(await platform.keys.resolve(key_ref)))


async def revoke_key(key_ref: str, platform: PlatformDep, _: AdminDep) -> KeyInfo:
    return KeyInfo(**describe_key(await platform.keys.revoke(key_ref)))


async def get_usage(
    platform: PlatformDep, _: AdminDep, by: str = "day", since: str | None = None,
    key: str | None = None, model: str | None = None, workspace: str | None = None,
) -> UsageReport:
    query = UsageQuery(
        by=by, since=parse_time(since, future=False, param="since") if since else None,
        key=await resolve_key_ref(platform.store, key), model=model, workspace=workspace,
    )
    return UsageReport(by=by, data=await usage_report(platform.store, query))


async def get_records(
    platform: PlatformDep, _: AdminDep, limit: Annotated[int, Query(gt=0, le=1000)] = 100,
    key: str | None = None, model: str | None = None, workspace: str | None = None,
) -> UsageRecords:
    rows = await recent_records(
        platform.store, limit=limit, key=await resolve_key_ref(platform.store, key),
        model=model, workspace=workspace,
    )
    return UsageRecords(data=rows)


def admin_router(prefix: str = "/admin/v1") -> APIRouter:
    """Key management and usage reports for admin keys; ``/me``, ``/usage/self`` for any key."""
    router = APIRouter(prefix=prefix, tags=["admin"])
    router.include_router(self_router(prefix=""))  # /me and /usage/self: any key, about itself
    router.add_api_route("/keys", create_key, methods=["POST"], status_code=201)
    router.add_api_route("/keys", list_keys, methods=["GET"])
    router.add_api_route("/keys/{key_ref}", get_key, methods=["GET"])
    router.add_api_route("/keys/{key_ref}", revoke_key, methods=["DELETE"])
    router.add_api_route("/usage", get_usage, methods=["GET"])
    router.add_api_route("/usage/records", get_records, methods=["GET"])
    return router


async def metrics(platform: PlatformDep) -> Response:
    body, content_type = platform.metrics.render()
    return Response(content=body, media_type=content_type)


def metrics_router(path: str = "/metrics") -> APIRouter:
    """Prometheus exposition of the app's own registry (no key: bind it where you trust)."""
    router = APIRouter(tags=["metrics"])
    router.add_api_route(path, metrics, methods=["GET"], include_in_schema=False)
    return router
