"""API keys: issue (``sk-`` secrets), hash, verify in constant time, revoke, and policy checks."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from dashserve.errors import InvalidRequest, NotFound
from dashserve.platform.revocations import Mark, mark_for
from dashserve.store import repos
from dashserve.store.db import Store
from dashserve.store.repos import KeyRow

SECRET_PREFIX = "sk-"
DEFAULT_WORKSPACE = "default"
_VISIBLE_CHARS = 8  # hex characters after "sk-" shown in listings and logs


def generate_secret() -> str:
    """A new secret: ``sk-`` followed by 32 hex characters (128 random bits)."""
    return SECRET_PREFIX + secrets.token_hex(16)


def hash_secret(secret: str) -> str:
    """sha256 hex of the secret: what the store keeps. Secrets are random, so no salt is needed."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def visible_prefix(secret: str) -> str:
    """The part of a secret safe to display and log, e.g. ``sk-1a2b3c4d``."""
    return secret[: len(SECRET_PREFIX) + _VISIBLE_CHARS]


def verify_secret(secret: str, secret_hash: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(secret).encode(), secret_hash.encode())


def match_static(secret: str, static_hashes: Iterable[str]) -> str | None:
    """The matching static hash, comparing against every entry so timing reveals nothing."""
    presented = hash_secret(secret).encode()
    found = None
    for candidate in static_hashes:
        if hmac.compare_digest(presented, candidate.encode()):
            found = candidate
    return found


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def is_usable(key: KeyRow, now: datetime) -> bool:
    """Neither revoked nor expired."""
    if key.revoked_at is not None:
        return False
    return key.expires_at is None or key.expires_at > now


def allows_model(key: KeyRow, model: str) -> bool:
    return key.allowed_models is None or not model or model in key.allowed_models


def describe_key(key: KeyRow) -> dict[str, Any]:
    """A key as JSON-ready data, without its hash."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": key.id, "prefix": key.prefix, "name": key.name, "workspace": key.workspace,
        "models": list(key.allowed_models) if key.allowed_models else None,
        "rpm": key.rpm, "tpm": key.tpm, "max_concurrency": key.max_concurrency,
        "is_admin": key.is_admin, "created_at": iso(key.created_at),
        "expires_at": iso(key.expires_at), "revoked_at": iso(key.revoked_at),
        "last_used_at": iso(key.last_used_at), "is_active": is_usable(key, now_utc()),
    }


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What ``keys create`` asks for; None limits mean "no limit of this kind"."""

    name: str | None = None
    workspace: str = DEFAULT_WORKSPACE
    allowed_models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    expires_at: datetime | None = None
    is_admin: bool = False

    def __post_init__(self) -> None:
        for field_name in ("rpm", "tpm", "max_concurrency"):
            value = getattr(self, field_name)
            if value is not None and value <= 0:
                raise InvalidRequest(f"{field_name} must be positive", param=field_name)
        if not self.workspace:
            raise InvalidRequest("workspace must not be empty", param="workspace")


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly created key. ``secret`` exists only here: show it once, never store it."""

    secret: str
    key: KeyRow


class KeyManager:
    """Create, list, find and revoke keys in the store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.mark: Mark = mark_for(store.engine.url)

    async def create(self, spec: KeySpec) -> IssuedKey:
        secret = generate_secret()
        row = KeyRow(
            id="key_" + uuid.uuid4().hex[:24],
            prefix=visible_prefix(secret),
            secret_hash=hash_secret(secret),
            name=spec.name,
            workspace=spec.workspace,
            allowed_models=spec.allowed_models,
            rpm=spec.rpm,
            tpm=spec.tpm,
            max_concurrency=spec.max_concurrency,
            is_admin=spec.is_admin,
            created_at=now_utc(),
            expires_at=spec.expires_at,
            revoked_at=None,
            last_used_at=None,
        )
        async with self._store.transaction() as session:
            await repos.insert_key(session, row=row)
        return IssuedKey(secret=secret, key=row)

    async def lookup(self, secret: str) -> KeyRow | None:
        """The stored key for a presented secret (usable or not), or None."""
        digest = hash_secret(secret)
        row = await self._store.read(lambda conn: repos.get_key_by_hash(conn, secret_hash=digest))
        if row is None or not verify_secret(secret, row.secret_hash):
            return None
        return row

    async def list_keys(
        self, *, include_revoked: bool = False, workspace: str | None = None
    ) -> list[KeyRow]:
        async with self._store.transaction() as session:
            return await repos.list_keys(
                session, include_revoked=include_revoked, workspace=workspace
            )

    async def count(self) -> int:
        async with self._store.transaction() as session:
            return await repos.count_keys(session)

    async def resolve(self, key_or_prefix: str) -> KeyRow:
        """One key from a full secret, its id, or an unambiguous visible prefix."""
        if key_or_prefix.startswith(SECRET_PREFIX) and len(key_or_prefix) > len(
            visible_prefix(key_or_prefix)
        ):
            row = await self.lookup(key_or_prefix)
            if row is None:
                raise NotFound("No such API key.")
            return row
        async with self._store.transaction() as session:
            rows = await repos.find_keys(session, id_or_prefix=key_or_prefix)
        exact = [r for r in rows if r.id == key_or_prefix]
        if exact:
            return exact[0]
        if not rows:
            raise NotFound("No such API key.")
        if len(rows) > 1:
            raise InvalidRequest(
                f"'{key_or_prefix}' matches {len(rows)} keys; give more characters or the id.",
                param="key",
            )
        return rows[0]

    async def revoke(self, key_or_prefix: str) -> KeyRow:
        """Revoke a key; its next request fails (see ``revocations.py``). Revoking twice is
        not an error."""
        row = await self.resolve(key_or_prefix)
        at = now_utc()
        async with self._store.transaction() as session:
            changed = await repos.revoke_key(session, key_id=row.id, at=at)
            if changed:
                await repos.notify_revocation(session)  # delivered at commit
        if changed:
            self.mark.bump()  # servers holding the key read it again
        return replace(row, revoked_at=at) if changed else row
