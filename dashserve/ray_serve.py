"""Engine replicas as Ray Serve deployments, each reachable by the front as an EngineClient.

``dashserve serve --ray --replicas N`` deploys, for every configured model, one Serve
application holding N engine deployments (one replica each, so the front can address each
one and keep its own routing) and an index deployment that tells their addresses. Every
replica runs dashserve's engine behind the token-id wire (``engine_server``) on its node;
the front connects a ``RemoteEngineClient`` to each and routes across them.

Ray is an optional extra (``pip install 'dashserve[ray]'``); it is imported only here, and
only when replicas are deployed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashserve.contracts.engine_client import EngineClient
from dashserve.contracts.outputs import EngineEvent, EngineStats
from dashserve.contracts.request import EngineRequest

if TYPE_CHECKING:
    from dashserve.config import ModelSpec, Settings

log = logging.getLogger(__name__)


# ----- inside Ray: the replica and the index -----------------------------------------------------


class EngineReplica:
    """One engine (loaded as ``serve`` loads it) serving the token-id wire on its node."""

    def __init__(self, model: str, options: dict[str, Any], secret: str, host: str) -> None:
        import uvicorn

        from dashserve.engine.async_engine import AsyncEngine
        from dashserve.upstream.engine_server import EngineServer, tokenizer_files

        self.engine = AsyncEngine.from_pretrained(model, warm_up=True, kernels="background",
                                                  **options)
        app = EngineServer(self.engine, tokenizer_files(self.engine.engine.model_dir),
                           secret).app(owns_engine=True)
        bind = "127.0.0.1" if host == "127.0.0.1" else "0.0.0.0"  # noqa: S104
        config = uvicorn.Config(app, host=bind, port=0, log_config=None, log_level="warning",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="engine-wire", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the replica's wire server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self._url = f"http://{host}:{port}"

    def url(self) -> str:
        return self._url

    def __del__(self) -> None:
        """Serve's shutdown of this replica: stop its wire server."""
        server = getattr(self, "server", None)
        if server is not None:
            server.should_exit = True

    def check_health(self) -> None:
        """Serve restarts a replica whose engine or wire server stopped."""
        if not self.thread.is_alive() or not self.engine.is_alive:
            raise RuntimeError("the engine replica stopped")


class ReplicaIndex:
    """The application's ingress: the addresses of its engine replicas, in order."""

    def __init__(self, *replicas: Any) -> None:
        self.replicas = replicas

    async def urls(self) -> list[str]:
        return list(await asyncio.gather(*(r.url.remote() for r in self.replicas)))


# ----- on the front: deploy and connect -----------------------------------------------------------


def app_name(spec: ModelSpec) -> str:
    return "dashserve-" + re.sub(r"[^A-Za-z0-9_-]+", "-", spec.names[0]).strip("-")


def start_ray(settings: Settings) -> Any:
    """Join the cluster (or start the local instance) and Serve on it; the Serve module.

    Call it first from a thread that lives as long as the server (its main thread): the
    processes of a local instance end with the thread that started them."""
    try:
        ray: Any = importlib.import_module("ray")
        serve: Any = importlib.import_module("ray.serve")
    except ImportError as exc:
        raise RuntimeError("--ray needs Ray Serve: pip install 'dashserve[ray]'") from exc
    # replicas import the same dashserve as this process, wherever it is installed
    package_root = str(Path(__file__).resolve().parents[1])
    if not ray.is_initialized():
        ray.init(address=settings.ray.address, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": package_root}}, log_to_driver=False)
        serve.start(proxy_location="Disabled")
    return serve


def deploy_replicas(settings: Settings, spec: ModelSpec, secret: str) -> list[str]:
    """Deploy ``settings.ray.replicas`` engine replicas of ``spec``; their wire URLs."""
    serve = start_ray(settings)
    host = "127.0.0.1" if settings.ray.address is None else _node_ip()
    replica = serve.deployment(EngineReplica, graceful_shutdown_timeout_s=5,
                               ray_actor_options={"num_cpus": settings.ray.num_cpus_per_replica})
    index = serve.deployment(ReplicaIndex, ray_actor_options={"num_cpus": 0})
    engines = [replica.options(name=f"engine-{i}").bind(
        spec.model, dataclasses.asdict(settings.engine_options(spec)), secret, host)
        for i in range(settings.ray.replicas)]
    handle = serve.run(index.bind(*engines), name=app_name(spec), route_prefix=None)
    return list(handle.urls.remote().result(timeout_s=600))


def _node_ip() -> str:
    util: Any = importlib.import_module("ray.util")
    return str(util.get_node_ip_address())


class RayReplicaSet:
    """The Ray Serve replicas of one model as one EngineClient: the pool routes across
    them; shutting the set down (the server's shutdown does) deletes them."""

    def __init__(self, pool: EngineClient, on_close: Callable[[], None]) -> None:
        self.pool = pool
        self.tokenizer = pool.tokenizer
        self.model_info = pool.model_info
        self._on_close = on_close

    @property
    def is_alive(self) -> bool:
        return bool(getattr(self.pool, "is_alive", True))

    def submit(self, request: EngineRequest) -> AsyncIterator[EngineEvent]:
        return self.pool.submit(request)

    async def abort(self, request_id: str) -> None:
        await self.pool.abort(request_id)

    def stats(self) -> EngineStats:
        return self.pool.stats()

    async def shutdown(self) -> None:
        await self.pool.shutdown()
        await asyncio.to_thread(self._on_close)


def load_ray_engines(settings: Settings) -> dict[str, EngineClient]:
    """Deploy every configured model's replicas and connect the front to them: served name
    -> the model's replica set. (The demo serves its text model only.) The wire's secret is
    ``DASHSERVE_ENGINE_SECRET`` when set, else a fresh one. Once every set is shut down,
    the replicas are deleted (and a local Ray instance stopped)."""
    from dashserve.upstream.engine_member import engine_pool
    from dashserve.upstream.engine_server import SECRET_ENV
    from dashserve.upstream.remote_engine import RemoteEngineClient

    secret = os.environ.get(SECRET_ENV) or secrets.token_urlsafe(24)
    specs = settings.model_specs()[:1] if settings.is_demo else settings.model_specs()
    open_sets = [len(specs)]
    lock = threading.Lock()

    def closed() -> None:
        with lock:
            open_sets[0] -= 1
            last = open_sets[0] == 0
        if last:
            teardown([app_name(spec) for spec in specs])

    engines: dict[str, EngineClient] = {}
    for spec in specs:
        urls = deploy_replicas(settings, spec, secret)
        log.info("%s: %d Ray Serve replicas at %s", spec.model, len(urls), ", ".join(urls))
        members = [asyncio.run(RemoteEngineClient.connect(url, secret=secret)) for url in urls]
        replica_set = RayReplicaSet(engine_pool(spec.names[0], members), closed)
        for name in spec.names:
            engines[name] = replica_set
    return engines


def teardown(app_names: Sequence[str]) -> None:
    """Delete the replicas this front deployed, then leave Ray (a local instance stops)."""
    try:
        ray: Any = importlib.import_module("ray")
        serve: Any = importlib.import_module("ray.serve")
    except ImportError:
        return
    if not ray.is_initialized():
        return
    started = time.monotonic()
    log.info("deleting the Ray Serve replicas")
    for name in app_names:  # deleting first lets the replicas stop at once
        serve.delete(name)
    log.info("Ray Serve replicas deleted in %.1f s", time.monotonic() - started)
    ray.shutdown()
    log.info("left Ray after %.1f s", time.monotonic() - started)
