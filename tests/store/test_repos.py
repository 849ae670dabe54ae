"""store.repos: key and usage queries behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from dashserve.store import repos
from dashserve.store.db import Store
from dashserve.store.repos import KeyRow
from tests.utils.store_queries import count_records

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


def make_key(key_id: str, prefix: str, **fields: object) -> KeyRow:
    values: dict[str, object] = dict(
        id=key_id, prefix=prefix, secret_hash=key_id.ljust(64, "0"), name=None,
        workspace="default", allowed_models=None, rpm=None, tpm=None, max_concurrency=None,
        is_admin=False, created_at=NOW, expires_at=None, revoked_at=None, last_used_at=None,
    )
    values.update(fields)
    return KeyRow(**values)  # type: ignore[arg-type]


def usage_row(record_id: str, *, key_id: str | None, model: str, at: datetime, status: int = 200,
              prefix: str = "sk-aaaa", tokens: tuple[int, int] = (10, 5)) -> dict[str, object]:
    return dict(
        record_id=record_id, request_id="req-" + record_id, key_id=key_id, key_prefix=prefix,
        workspace="default", model=model, input_tokens=tokens[0], output_tokens=tokens[1],
        cached_tokens=1, reasoning_tokens=0, finish_reason="stop", status_code=status,
        ttft_ms=5.0, duration_ms=20.0, created_at=at,
    )


async def test_keys_round_trip(store: Store) -> None:
    async with store.transaction() as s:
        row = make_key("k1", "sk-11111111", allowed_models=("a", "b"), rpm=3)
        await repos.insert_key(s, row=row)
        await repos.insert_key(s, row=make_key("k2", "sk-11112222", is_admin=True))
    async with store.transaction() as s:
        got = await repos.get_key_by_hash(s, secret_hash="k1".ljust(64, "0"))
        assert got is not None and got.allowed_models == ("a", "b") and got.rpm == 3
        assert got.created_at == NOW
        assert (await repos.get_key(s, key_id="k2")).is_admin is True  # type: ignore[union-attr]
        assert {k.id for k in await repos.find_keys(s, id_or_prefix="sk-1111")} == {"k1", "k2"}
        assert [k.id for k in await repos.find_keys(s, id_or_prefix="sk-11112")] == ["k2"]
        assert await repos.find_keys(s, id_or_prefix="sk-1111%") == []  # LIKE is escaped
        assert await repos.count_keys(s) == 2


async def test_revoke_once_and_list_hides_revoked(store: Store) -> None:
    async with store.transaction() as s:
        await repos.insert_key(s, row=make_key("k1", "sk-1"))
        await repos.insert_key(s, row=make_key("k2", "sk-2", workspace="ws"))
    async with store.transaction() as s:
        assert await repos.revoke_key(s, key_id="k1", at=NOW) is True
        assert await repos.revoke_key(s, key_id="k1", at=NOW) is False
        assert await repos.revoke_key(s, key_id="nope", at=NOW) is False
    async with store.transaction() as s:
        assert [k.id for k in await repos.list_keys(s)] == ["k2"]
        assert [k.id for k in await repos.list_keys(s, include_revoked=True)] == ["k1", "k2"]
        assert [k.id for k in await repos.list_keys(s, workspace="ws")] == ["k2"]


async def test_touch_keys_only_moves_forward(store: Store) -> None:
    async with store.transaction() as s:
        await repos.insert_key(s, row=make_key("k1", "sk-1"))
        await repos.touch_keys(s, last_used={"k1": NOW})
        await repos.touch_keys(s, last_used={"k1": NOW - timedelta(hours=1)})
    async with store.transaction() as s:
        assert (await repos.get_key(s, key_id="k1")).last_used_at == NOW  # type: ignore[union-attr]


async def test_daily_upsert_adds_up(store: Store) -> None:
    row = dict(day=date(2026, 11, 20), workspace="default", key_id="k1", model="m",
               key_prefix="sk-1", num_requests=2, num_errors=1, input_tokens=10,
               output_tokens=4, cached_tokens=0, reasoning_tokens=1)
    async with store.transaction() as s:
        await repos.add_daily(s, rows=[row])
    async with store.transaction() as s:
        await repos.add_daily(s, rows=[row, {**row, "model": "other"}])
    async with store.transaction() as s:
        by_model = await repos.sum_daily(s, by="model")
        by_day = await repos.sum_daily(s, by="day", since_day=date(2026, 11, 20))
        later = await repos.sum_daily(s, by="day", since_day=date(2026, 11, 21))
    assert [(r["model"], r["num_requests"], r["input_tokens"]) for r in by_model] == [
        ("m", 4, 20), ("other", 2, 10)
    ]
    assert by_day[0]["num_requests"] == 6 and by_day[0]["num_errors"] == 3
    assert later == []


async def test_records_filters_and_dedupe(store: Store) -> None:
    rows = [
        usage_row("r1", key_id="k1", model="m1", at=NOW),
        usage_row("r2", key_id=None, prefix="static-abcd", model="m1", at=NOW + timedelta(1)),
        usage_row("r3", key_id="k1", model="m2", at=NOW + timedelta(2)),
    ]
    async with store.transaction() as s:
        await repos.insert_usage(s, rows=rows)
    async with store.transaction() as s:
        assert await repos.existing_record_ids(s, record_ids=["r1", "r3", "x"]) == {"r1", "r3"}
        assert await count_records(s) == 3
        static = await repos.select_records(s, key_id="static-abcd")
        assert [r["record_id"] for r in static] == ["r2"]
        assert [r["record_id"] for r in await repos.select_records(s, model="m1")] == ["r1", "r2"]
        since = await repos.select_records(s, since=NOW + timedelta(1), newest_first=True)
        assert [r["record_id"] for r in since] == ["r3", "r2"]
        assert len(await repos.select_records(s, limit=1)) == 1
