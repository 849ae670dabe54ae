"""platform.keys: secrets, hashes, constant-time checks, create/resolve/revoke on both stores."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta, timezone

import pytest

from dashserve.errors import InvalidRequest, NotFound
from dashserve.platform import keys as keys_module
from dashserve.platform.keys import (
    KeyManager,
    KeySpec,
    allows_model,
    generate_secret,
    hash_secret,
    is_usable,
    match_static,
    verify_secret,
    visible_prefix,
)
from dashserve.store.db import Store
from dashserve.store.tables import api_keys


def test_secret_shape_and_hash() -> None:
    secret = generate_secret()
    assert re.fullmatch(r"sk-[0-9a-f]{32}", secret)
    assert generate_secret() != secret
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert visible_prefix(secret) == secret[:11]
    assert verify_secret(secret, hash_secret(secret))
    assert not verify_secret(secret + "x", hash_secret(secret))


def test_comparisons_are_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    statics = [hash_secret(s) for s in ("one", "two", "three")]
    assert match_static("two", statics) == hash_secret("two")
    assert len(calls) == 3  # every entry compared, no early exit on the match
    calls.clear()
    assert match_static("nope", statics) is None and len(calls) == 3
    calls.clear()
    verify_secret("x", hash_secret("x"))
    assert len(calls) == 1


def test_key_spec_validates() -> None:
    with pytest.raises(InvalidRequest):
        KeySpec(rpm=0)
    with pytest.raises(InvalidRequest):
        KeySpec(workspace="")


async def test_create_stores_only_a_hash(store: Store) -> None:
    manager = KeyManager(store)
    issued = await manager.create(KeySpec(name="ci", workspace="ws1", allowed_models=("qwen",)))
    async with store.transaction() as s:
        stored = [dict(r._mapping) for r in (await s.execute(api_keys.select())).all()]
    assert len(stored) == 1
    assert issued.secret not in repr(stored)  # never the secret itself
    assert stored[0]["secret_hash"] == hash_secret(issued.secret)
    assert stored[0]["prefix"] == visible_prefix(issued.secret)
    found = await manager.lookup(issued.secret)
    assert found is not None and found.id == issued.key.id and found.workspace == "ws1"
    assert allows_model(found, "qwen") and not allows_model(found, "other")
    assert await manager.lookup(generate_secret()) is None


async def test_resolve_by_secret_id_or_prefix(store: Store) -> None:
    manager = KeyManager(store)
    a = await manager.create(KeySpec())
    b = await manager.create(KeySpec())
    assert (await manager.resolve(a.secret)).id == a.key.id
    assert (await manager.resolve(b.key.id)).id == b.key.id
    assert (await manager.resolve(a.key.prefix)).id == a.key.id
    with pytest.raises(InvalidRequest, match="matches 2 keys"):
        await manager.resolve("sk-")
    with pytest.raises(NotFound):
        await manager.resolve("sk-zzzz")
    with pytest.raises(NotFound):
        await manager.resolve(generate_secret())


async def test_revoke_and_expiry(store: Store) -> None:
    manager = KeyManager(store)
    issued = await manager.create(KeySpec())
    revoked = await manager.revoke(issued.key.prefix)
    assert revoked.revoked_at is not None
    assert (await manager.revoke(issued.key.id)).revoked_at is not None  # twice is fine
    row = await manager.lookup(issued.secret)
    now = datetime.now(timezone.utc)
    assert row is not None and not is_usable(row, now)
    assert await manager.list_keys() == []
    assert len(await manager.list_keys(include_revoked=True)) == 1
    soon = await manager.create(KeySpec(expires_at=now + timedelta(seconds=30)))
    assert is_usable(soon.key, now) and not is_usable(soon.key, now + timedelta(minutes=1))
