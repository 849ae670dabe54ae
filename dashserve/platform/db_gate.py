"""DbGate: the Gate backed by the key store, a rate limiter, the usage writer and metrics.

A key revoked by any process fails on its very next request (on PostgreSQL, revoked by
another server: once the revocation's notification reached this one). A key read from the
store is reused, without reading the store again, while the store's revocation mark
(``revocations.py``: a file beside SQLite, notifications from PostgreSQL) reads as it did
before that read, and for at most ``key_reuse_s`` (which bounds how long a change made to the
database by hand goes unseen); without a mark every request reads the store. If the store
cannot be reached, keys seen valid within ``offline_grace_s`` keep working (a request against
a dead database is still served); unknown keys then get 503.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy.exc import SQLAlchemyError

from dashserve.errors import (
    AccessDenied,
    AuthenticationFailed,
    DashServeError,
    ModelAccessDenied,
    ModelUnavailable,
    WorkspaceAccessDenied,
)
from dashserve.platform.gate import Admission, Principal, UsageRecord
from dashserve.platform.keys import (
    DEFAULT_WORKSPACE,
    KeyManager,
    allows_model,
    hash_secret,
    is_usable,
    match_static,
    now_utc,
)
from dashserve.platform.limits import Limiter, LimitPolicy, Reservation
from dashserve.platform.logs import log_request
from dashserve.platform.metering import UsageWriter
from dashserve.platform.metrics import UNKNOWN, PlatformMetrics
from dashserve.store.db import Store
from dashserve.store.repos import KeyRow

logger = logging.getLogger(__name__)

_CACHE_SIZE = 10_000

Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class KeyPrincipal(Principal):
    """A principal carrying its key's rate limits to ``admit``."""

    policy: LimitPolicy = field(default_factory=LimitPolicy)


@dataclass(slots=True)
class GateAdmission(Admission):
    """An admission holding its limiter reservation until ``finish``."""

    reservation: Reservation | None = None


@dataclass(frozen=True, slots=True)
class GateConfig:
    """Static keys (from ``--api-key``), admin keys and admission settings."""

    static_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    static_limits: LimitPolicy = field(default_factory=LimitPolicy)
    default_workspace: str = DEFAULT_WORKSPACE
    offline_grace_s: float = 3600.0  # how long a key seen valid works while the store is down
    store_retry_s: float = 1.0  # after a store failure, trust the cache this long before retrying
    key_reuse_s: float = 60.0  # how long a key read from the store is reused (see above)


def static_prefix(secret_hash: str) -> str:
    """A loggable name for a static key that reveals nothing of it."""
    return "static-" + secret_hash[:8]


class DbGate:
    """Implements ``Gate``: authenticate → admit → finish(UsageRecord)."""

    def __init__(
        self, store: Store, *, limiter: Limiter, writer: UsageWriter,
        metrics: PlatformMetrics | None = None, config: GateConfig | None = None,
        hooks: tuple[Hook, Hook] | None = None,
    ) -> None:
        """``hooks``: (on_start, on_stop), run first in ``start`` and last in ``stop``."""
        self.config = config or GateConfig()
        self.keys = KeyManager(store)
        self.writer = writer
        self.metrics = metrics
        self._limiter = limiter
        self._admin_hashes = {hash_secret(k) for k in self.config.admin_keys}
        self._static_hashes = [hash_secret(k) for k in self.config.static_keys]
        self._static_hashes += [h for h in self._admin_hashes if h not in self._static_hashes]
        # digest -> (key, when it was read, the revocation mark read before it)
        self._known: OrderedDict[str, tuple[KeyRow, float, str | None]] = OrderedDict()
        self._store_down_until = 0.0
        self._started = False
        self._hooks = hooks

    async def start(self) -> None:
        """Run the start hook (migrations, first key), then the usage writer. Idempotent."""
        if not self._started:
            if self._hooks is not None:
                await self._hooks[0]()
            await self.keys.mark.start()
            await self.writer.start()
            self._started = True

    async def stop(self) -> None:
        """Drain the usage writer, release the limiter, run the stop hook. Idempotent."""
        if self._started:
            self._started = False
            await self.writer.stop()
            await self.keys.mark.stop()
            await self._limiter.close()
            if self._hooks is not None:
                await self._hooks[1]()

    async def authenticate(
        self, api_key: str | None, workspace: str | None, model: str
    ) -> Principal:
        return await self._authenticate(api_key, workspace, model)

    async def identify(self, api_key: str | None) -> Principal:
        """The key's principal, admin or not, with no model or workspace check (401 if none)."""
        return await self._authenticate(api_key, None, "")

    async def authenticate_admin(self, api_key: str | None) -> Principal:
        """An admin principal, or AuthenticationFailed (401) / AccessDenied (403)."""
        principal = await self.identify(api_key)
        if not principal.is_admin:
            raise AccessDenied("This API key may not use the admin API.")
        return principal

    async def _authenticate(
        self, api_key: str | None, workspace: str | None, model: str
    ) -> Principal:
        if not api_key:
            raise AuthenticationFailed()
        static = match_static(api_key, self._static_hashes)
        if static is not None:
            if workspace and workspace != self.config.default_workspace:
                raise WorkspaceAccessDenied()  # static keys belong to the default workspace
            return KeyPrincipal(
                key_id=None, key_prefix=static_prefix(static),
                workspace=self.config.default_workspace,
                is_admin=static in self._admin_hashes, policy=self.config.static_limits,
            )
        key = await self._lookup(api_key)
        if key is None or not is_usable(key, now_utc()):
            raise AuthenticationFailed()
        principal = KeyPrincipal(
            key_id=key.id, key_prefix=key.prefix, workspace=key.workspace, name=key.name,
            is_admin=key.is_admin, policy=LimitPolicy(key.rpm, key.tpm, key.max_concurrency),
        )
        denied: AccessDenied | None = None
        if workspace and workspace != key.workspace:
            denied = WorkspaceAccessDenied()
        elif not allows_model(key, model):
            denied = ModelAccessDenied()
        if denied is not None:
            denied.principal = principal  # the refusal is billed to this key
            raise denied
        return principal

    async def _lookup(self, secret: str) -> KeyRow | None:
        digest = hash_secret(secret)
        now = time.monotonic()
        mark = self.keys.mark.read()  # before the store: a revocation after it changes it
        cached = self._known.get(digest)
        if (cached is not None and mark is not None and cached[2] == mark
                and now - cached[1] < self.config.key_reuse_s):
            return cached[0]
        if now >= self._store_down_until:
            try:
                key = await self.keys.lookup(secret)
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                self._store_down_until = now + self.config.store_retry_s
                logger.error("key store unavailable, using keys seen recently: %s", exc)
            else:
                self._remember(digest, key, now, mark)
                return key
        if cached is None or now - cached[1] > self.config.offline_grace_s:
            raise ModelUnavailable("The key store is unavailable, please try again later.")
        return cached[0]

    def _remember(self, digest: str, key: KeyRow | None, now: float, mark: str | None) -> None:
        if key is None or not is_usable(key, now_utc()):
            self._known.pop(digest, None)
            return
        self._known[digest] = (key, now, mark)
        self._known.move_to_end(digest)
        while len(self._known) > _CACHE_SIZE:
            self._known.popitem(last=False)

    def _limits(self, principal: Principal) -> tuple[str, LimitPolicy]:
        """The limiter's subject for ``principal`` and its limits."""
        policy = (
            principal.policy if isinstance(principal, KeyPrincipal) else self.config.static_limits
        )
        return principal.key_id or principal.key_prefix, policy

    def expects_admission(self, principal: Principal, estimated_tokens: int) -> bool:
        return self._limiter.expects(*self._limits(principal), estimated_tokens)

    async def admit(
        self, principal: Principal, request_id: str, model: str, estimated_tokens: int
    ) -> Admission:
        subject, policy = self._limits(principal)
        reservation = await self._limiter.acquire(subject, policy, estimated_tokens)
        return GateAdmission(
            principal=principal, request_id=request_id, model=model,
            reserved_tokens=reservation.tokens, started_at=time.monotonic(),
            reservation=reservation,
        )

    async def finish(self, admission: Admission, record: UsageRecord) -> None:
        """Settle the reservation with actual tokens, count metrics, queue the record."""
        reservation = getattr(admission, "reservation", None)
        if reservation is not None:
            admission.reservation = None  # type: ignore[attr-defined]
            try:
                await self._limiter.settle(reservation, record.input_tokens + record.output_tokens)
            except Exception as exc:  # noqa: BLE001 - finish never raises
                logger.error("rate limiter settle failed for %s: %s", record.request_id, exc)
        if self.metrics is not None:
            self.metrics.observe_request(record)
        log_request(logger, record)
        await self.writer.submit(record)

    def bind_served_names(self, names: Callable[[], Collection[str]]) -> None:
        """Metrics and error rows name only served models (others are ``unknown``)."""
        if self.metrics is not None:
            self.metrics.bind_served_names(names)

    async def refuse(self, request_id: str, principal: Principal | None, model: str,
                     error: DashServeError) -> None:
        """An error answered without a run: counted in metrics by status and code, and, for
        a known key, stored as a usage row with zero tokens (unauthenticated callers have no
        key to bill, and must not be able to fill the table)."""
        label = self.metrics.model_label(model) if self.metrics is not None else UNKNOWN
        if self.metrics is not None:
            self.metrics.observe_rejected(model, error.status_code, error.code)
        logger.info("request refused", extra={
            "request_id": request_id, "status_code": error.status_code, "code": error.code,
            "key_prefix": principal.key_prefix if principal else None, "model": label})
        if principal is None:
            return
        await self.writer.submit(UsageRecord(
            request_id=request_id, key_id=principal.key_id, key_prefix=principal.key_prefix,
            workspace=principal.workspace, model=label, input_tokens=0, output_tokens=0,
            cached_tokens=0, reasoning_tokens=0, finish_reason=None,
            status_code=error.status_code, ttft_ms=None, duration_ms=0.0,
            created_at=datetime.now(timezone.utc), error_code=error.code))
