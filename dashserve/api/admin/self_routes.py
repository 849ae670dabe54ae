"""What any key may ask about itself: ``GET /admin/v1/me`` and ``GET /admin/v1/usage/self``.

The key in ``Authorization: Bearer`` authenticates itself (admin or not); the usage report is
the same as ``/admin/v1/usage`` (and ``dashserve usage``) filtered to that key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from dashserve.api.admin.protocol import AdminModel, UsageReport
from dashserve.platform.gate import Principal
from dashserve.platform.reports import UsageQuery, usage_report
from dashserve.platform.state import PlatformState
from dashserve.platform.timespec import parse_time


class Identity(AdminModel):
    object: str = "api_key"
    id: str | None  # None for keys given on the command line
    prefix: str
    name: str | None
    workspace: str | None
    models: list[str] | None  # None: every model
    is_admin: bool


def _platform(request: Request) -> PlatformState:
    return request.app.state.platform  # type: ignore[no-any-return]


PlatformDep = Annotated[PlatformState, Depends(_platform)]


async def _caller(platform: PlatformDep,
                  authorization: Annotated[str | None, Header()] = None) -> Principal:
    from dashserve.api.admin.routes import bearer_token

    return await platform.gate.identify(bearer_token(authorization))


CallerDep = Annotated[Principal, Depends(_caller)]


async def whoami(platform: PlatformDep, caller: CallerDep) -> Identity:
    models = None
    if caller.key_id is not None:
        row = await platform.keys.resolve(caller.key_id)
        models = list(row.allowed_models) if row.allowed_models else None
    return Identity(id=caller.key_id, prefix=caller.key_prefix, name=caller.name,
                    workspace=caller.workspace, models=models, is_admin=caller.is_admin)


async def own_usage(platform: PlatformDep, caller: CallerDep, by: str = "day",
                    since: str | None = None, model: str | None = None) -> UsageReport:
    # Records of static keys carry no id: reports name them by their prefix.
    query = UsageQuery(
        by=by, since=parse_time(since, future=False, param="since") if since else None,
        key=caller.key_id or caller.key_prefix, model=model,
    )
    return UsageReport(by=by, data=await usage_report(platform.store, query))


def self_router(prefix: str = "/admin/v1") -> APIRouter:
    """Routes any valid key may call about itself."""
    router = APIRouter(prefix=prefix, tags=["admin"])
    router.add_api_route("/me", whoami, methods=["GET"])
    router.add_api_route("/usage/self", own_usage, methods=["GET"])
    return router
