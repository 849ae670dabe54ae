"""create_app(): the FastAPI application — state, lifespan, middleware, routers, error handlers.

Engines are either given ready (tests, embedding) or built by a ``loader`` in a
background thread once the server is up, so ``/health`` can answer 503 with progress
while weights load and 200 once every model is ready.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashserve.api import health
from dashserve.api.admin.content_routes import content_router
from dashserve.api.admin.routes import admin_router, metrics_router
from dashserve.api.dashscope import routes as native_routes
from dashserve.api.dashscope import uploads as upload_routes
from dashserve.api.errors import install_error_handlers
from dashserve.api.files import routes as files_routes
from dashserve.api.hot_routes import HotRoutes
from dashserve.api.openai import routes as openai_routes
from dashserve.api.openapi import install_openapi
from dashserve.config import Settings
from dashserve.contracts.engine_client import EngineClient
from dashserve.contracts.outputs import EngineStats
from dashserve.inspection.config import build_inspector
from dashserve.media.sources import MediaConfig
from dashserve.media.uploads import UploadStore
from dashserve.netguard import FetchPolicy
from dashserve.platform.files import FileService
from dashserve.platform.gate import Gate
from dashserve.platform.logs import current_request_id
from dashserve.platform.state import PlatformState
from dashserve.search.config import build_search
from dashserve.serving.registry import ModelRegistry, ServerState
from dashserve.serving.service import GenerationService
from dashserve.serving.vision import ImagePreparer
from dashserve.serving.web_search import WebSearch

log = logging.getLogger(__name__)

# Builds the engines (served name -> engine) off the event loop; may report progress
# through ``registry.detail``.
EngineLoader = Callable[[ModelRegistry], Mapping[str, EngineClient]]

# the hot path, served by its endpoints without the router's walk (``HotRoutes``); each
# path's endpoint is the one its router has there (a test holds them to that)
GENERATION_ROUTES = {
    "/compatible-mode/v1/chat/completions": openai_routes.chat_completions,
    "/api/v1/services/aigc/text-generation/generation": native_routes.text_generation,
    "/api/v1/services/aigc/multimodal-generation/generation": native_routes.multimodal_generation,
}


class RequestIdMiddleware:
    """Gives each HTTP request an id (``request.state.request_id``) and echoes it in the
    ``x-request-id`` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        token = current_request_id.set(request_id)  # for log lines, uvicorn's access line too

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)


async def _run_loader(loader: EngineLoader, registry: ModelRegistry) -> Mapping[str, Any]:
    """Run ``loader`` on a daemon thread (an unfinished load must not block exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Mapping[str, Any]] = loop.create_future()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def work() -> None:
        try:
            result = loader(registry)
        except BaseException as exc:  # handed to the event loop, which reports it
            outcome: tuple[Callable[[Any], None], Any] = (future.set_exception, exc)
        else:
            outcome = (future.set_result, result)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:  # the loop is gone: the server stopped while loading
            pass

    threading.Thread(target=work, name="dashserve-loader", daemon=True).start()
    return await future


async def _load(app: FastAPI, loader: EngineLoader,
                on_fatal: Callable[[BaseException], None] | None) -> None:
    registry: ModelRegistry = app.state.registry
    try:
        engines = await _run_loader(loader, registry)
    except Exception as exc:
        registry.state = ServerState.FAILED
        registry.detail = f"loading failed: {type(exc).__name__}: {exc}"
        log.error("model loading failed", exc_info=exc)
        if on_fatal is not None:
            on_fatal(exc)
        return
    registry.install(engines)
    # what loading made (weights' metadata, vocabularies, compiled templates) lives as long
    # as the server: out of the collector's sight, a collection walks only request objects
    gc.collect()
    gc.freeze()
    log.info("ready: serving %s", ", ".join(m.name for m in registry.models))


async def close_extras(app: FastAPI) -> None:
    """Close the search providers and the inspection rules."""
    for extra in (app.state.search, app.state.inspector):
        if extra is not None:
            try:
                await extra.aclose()
            except Exception:
                log.exception("closing %s failed", type(extra).__name__)


def _lifespan(loader: EngineLoader | None, on_fatal: Callable[[BaseException], None] | None
              ) -> Callable[[FastAPI], Any]:
    """Start-up: the gate, then (maybe) loading. Shutdown: stop taking requests, abort what
    is left, stop the engines and the gate."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry: ModelRegistry = app.state.registry
        service: GenerationService = app.state.service
        gate: Gate = app.state.gate
        await gate.start()
        loading = None
        if loader is not None and not registry.is_ready:
            loading = asyncio.create_task(_load(app, loader, on_fatal), name="dashserve-load")
        try:
            yield
        finally:
            registry.state = ServerState.DRAINING
            registry.detail = "shutting down"
            if loading is not None:
                loading.cancel()
            await service.close_all()
            for engine in registry.engines:
                await engine.shutdown()
            await close_extras(app)
            await gate.stop()

    return lifespan


def image_preparer(settings: Settings) -> ImagePreparer:
    """Where request images may come from, as the settings say."""
    policy = FetchPolicy(max_bytes=settings.media_max_bytes,
                         allowed_domains=settings.media_allowed_domains,
                         allow_loopback=settings.media_allow_loopback)
    uploads = UploadStore(settings.data_dir, ttl_s=settings.upload_ttl_s,
                          max_bytes=settings.media_max_bytes)
    return ImagePreparer(MediaConfig(policy, settings.media_max_bytes,
                                     settings.allowed_local_media_path, uploads),
                         max_images=settings.max_images_per_request)


def engine_stats(registry: ModelRegistry) -> EngineStats | None:
    """Queue and KV state summed over the loaded engines (None while loading)."""
    if not registry.is_ready:
        return None
    return EngineStats.summed(e.stats() for e in registry.engines)


def create_app(settings: Settings, engines: Mapping[str, EngineClient] | None, gate: Gate, *,
               loader: EngineLoader | None = None,
               on_fatal: Callable[[BaseException], None] | None = None,
               files: FileService | None = None,
               platform: PlatformState | None = None) -> FastAPI:
    """The application. ``engines`` maps each served name to its engine (aliases share
    one engine); alternatively ``loader`` builds that mapping after start-up. ``files``
    serves the files API and ``fileid://`` documents (None: both are unavailable).
    ``platform`` (whose gate is ``gate``) adds the admin API and ``/metrics``, which also
    reports the engines' queues and KV caches; without it neither route exists."""
    if platform is not None and platform.gate is not gate:
        raise ValueError("create_app: gate must be the platform's own gate")
    registry = ModelRegistry()
    if engines is not None:
        registry.install(engines)
    search = build_search(settings.search, settings.data_dir)
    inspector = build_inspector(settings.inspection, settings.data_dir, registry)
    service = GenerationService(registry, gate,
                                max_inflight_per_engine=settings.max_inflight_per_model,
                                share_prefix_cache=settings.share_prefix_cache,
                                images=image_preparer(settings),
                                web_search=WebSearch(search) if search is not None else None,
                                inspector=inspector, documents=files,
                                max_waiting=settings.max_waiting,
                                max_kv_usage=settings.max_kv_usage)
    app = FastAPI(title="dashserve", lifespan=_lifespan(loader, on_fatal), docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.registry = registry
    app.state.gate = gate
    app.state.service = service
    app.state.search = search  # SearchBackends | None (the admin API reaches the index here)
    app.state.inspector = inspector
    app.state.files = files
    app.state.report_error = getattr(gate, "refuse", None)  # error answers: metrics, usage
    bind_names = getattr(gate, "bind_served_names", None)
    if bind_names is not None:  # metrics label only served names
        bind_names(lambda: registry.names)
    app.add_middleware(HotRoutes, owner=app, routes=GENERATION_ROUTES)
    app.add_middleware(RequestIdMiddleware)  # outside HotRoutes: every request gets its id
    install_error_handlers(app)
    # routes are matched in this order: the generation routes, the hot path, come first
    app.include_router(openai_routes.router)
    app.include_router(native_routes.router)
    app.include_router(health.router)
    app.include_router(upload_routes.router)
    app.include_router(files_routes.compat_router)
    app.include_router(files_routes.native_router)
    if settings.console:
        from dashserve.console import mount_console

        mount_console(app)
    if platform is not None:
        app.state.platform = platform  # what the admin and metrics routes reach
        app.include_router(admin_router())
        app.include_router(content_router())
        app.include_router(metrics_router())
        platform.bind_engine_stats(lambda: engine_stats(registry))
    install_openapi(app)
    return app
