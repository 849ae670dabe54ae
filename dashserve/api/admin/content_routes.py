"""Admin routes for web search and content screening (admin key only).

``/admin/v1/search/documents``: the local search index (POST adds a document, GET lists,
GET/DELETE ``/{id}``); ``GET /admin/v1/search?q=...`` runs a query against the configured
providers as a request would. ``/admin/v1/inspection/rules``: keyword and regex rules per
workspace (``*``: every workspace).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from dashserve.api.admin.routes import AdminDep
from dashserve.errors import NotFound, UnsupportedFeature
from dashserve.inspection.rules import RuleInspector
from dashserve.search.config import SearchBackends
from dashserve.search.local_index import LocalIndex
from dashserve.search.results import SearchFailed


class NewDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=500)
    url: str = Field(min_length=1, max_length=2048)
    content: str = Field(min_length=1, max_length=1_000_000)
    site_name: str = Field(default="", max_length=200)
    id: str | None = Field(default=None, min_length=1, max_length=200)


class NewRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workspace: str = Field(default="*", min_length=1, max_length=200)
    kind: Literal["keyword", "regex"] = "keyword"
    pattern: str = Field(min_length=1, max_length=1000)


def _index(request: Request) -> LocalIndex:
    backends: SearchBackends | None = request.app.state.search
    if backends is None or backends.index is None:
        raise UnsupportedFeature("the local search index is not enabled on this server "
                                 "(search.providers does not include 'local')")
    return backends.index


def _rules(request: Request) -> RuleInspector:
    inspector = request.app.state.inspector
    if not isinstance(inspector, RuleInspector):
        raise UnsupportedFeature("rule lists are not enabled on this server "
                                 "(inspection.provider is not 'rules')")
    return inspector


async def add_document(body: NewDocument, request: Request, _: AdminDep) -> dict[str, Any]:
    doc = _index(request).add(body.title, body.url, body.content, site_name=body.site_name,
                              doc_id=body.id)
    return doc.to_dict()


async def list_documents(request: Request, _: AdminDep,
                         limit: Annotated[int, Query(gt=0, le=1000)] = 100,
                         offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    docs, total = _index(request).list(limit=limit, offset=offset)
    return {"object": "list", "total": total, "data": [d.to_dict() for d in docs]}


async def get_document(doc_id: str, request: Request, _: AdminDep) -> dict[str, Any]:
    doc = _index(request).get(doc_id)
    if doc is None:
        raise NotFound(f"no document {doc_id!r}")
    return doc.to_dict()


async def delete_document(doc_id: str, request: Request, _: AdminDep) -> dict[str, Any]:
    if not _index(request).delete(doc_id):
        raise NotFound(f"no document {doc_id!r}")
    return {"id": doc_id, "deleted": True}


async def try_search(request: Request, _: AdminDep, q: Annotated[str, Query(min_length=1)],
                     k: Annotated[int, Query(gt=0, le=50)] = 5) -> dict[str, Any]:
    backends: SearchBackends | None = request.app.state.search
    if backends is None:
        raise UnsupportedFeature("no search provider is configured", param="search")
    data: list[dict[str, Any]] = []
    for provider in backends.providers:
        try:
            results = await provider.search(q, k)
        except SearchFailed as exc:
            data.append({"provider": provider.name, "error": str(exc)})
            continue
        data.append({"provider": provider.name, "results": [
            {"title": r.title, "url": r.url, "snippet": r.snippet, "site_name": r.site}
            for r in results]})
    return {"object": "list", "data": data}


async def add_rule(body: NewRule, request: Request, _: AdminDep) -> dict[str, Any]:
    return _rules(request).store.add(body.workspace, body.kind, body.pattern).to_dict()


async def list_rules(request: Request, _: AdminDep,
                     workspace: str | None = None) -> dict[str, Any]:
    rules = _rules(request).store.list(workspace)
    return {"object": "list", "data": [r.to_dict() for r in rules]}


async def delete_rule(rule_id: str, request: Request, _: AdminDep) -> dict[str, Any]:
    if not _rules(request).store.delete(rule_id):
        raise NotFound(f"no rule {rule_id!r}")
    return {"id": rule_id, "deleted": True}


def content_router(prefix: str = "/admin/v1") -> APIRouter:
    """Search documents and inspection rules, for admin keys only."""
    router = APIRouter(prefix=prefix, tags=["admin"])
    router.add_api_route("/search/documents", add_document, methods=["POST"], status_code=201)
    router.add_api_route("/search/documents", list_documents, methods=["GET"])
    router.add_api_route("/search/documents/{doc_id}", get_document, methods=["GET"])
    router.add_api_route("/search/documents/{doc_id}", delete_document, methods=["DELETE"])
    router.add_api_route("/search", try_search, methods=["GET"])
    router.add_api_route("/inspection/rules", add_rule, methods=["POST"], status_code=201)
    router.add_api_route("/inspection/rules", list_rules, methods=["GET"])
    router.add_api_route("/inspection/rules/{rule_id}", delete_rule, methods=["DELETE"])
    return router


__all__ = ["content_router"]
