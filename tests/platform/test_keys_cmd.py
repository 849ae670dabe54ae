"""``dashserve keys`` and ``dashserve usage`` from the command line, on both databases."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dashserve.cli import main
from dashserve.platform.gate import UsageRecord
from dashserve.platform.metering import write_batch
from dashserve.platform.state import PlatformSettings
from dashserve.store.db import open_store
from tests.utils.platform import build_platform


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def where(db_url: str, tmp_path: Path) -> list[str]:
    return ["--data-dir", str(tmp_path / "data"), "--database-url", db_url]


def test_create_list_revoke(capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    code, out, _ = run(capsys, "keys", *where, "create", "--name", "ci", "--workspace", "ws1",
                       "--models", "qwen-a,qwen-b", "--rpm", "5", "--tpm", "900",
                       "--concurrency", "2", "--expires", "30d")
    assert code == 0
    secret = re.search(r"^(sk-[0-9a-f]{32})$", out, re.M).group(1)  # type: ignore[union-attr]
    prefix = secret[:11]
    code, out, _ = run(capsys, "keys", *where, "list")
    assert code == 0 and secret not in out
    line = next(row for row in out.splitlines() if row.startswith(prefix))
    for text in ("ci", "ws1", "qwen-a,qwen-b", "5", "900", "2", "never", "active"):
        assert text in line
    code, out, _ = run(capsys, "keys", "revoke", *where, prefix)  # options after the action too
    assert code == 0 and "Revoked" in out
    assert prefix not in run(capsys, "keys", *where, "list")[1]
    assert "revoked" in run(capsys, "keys", *where, "list", "--all")[1]
    code, _, err = run(capsys, "keys", *where, "revoke", "sk-nothere")
    assert code == 1 and "No such API key" in err


def test_json_output_and_bad_input(capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    code, out, _ = run(capsys, "keys", *where, "create", "--admin", "--json")
    created = json.loads(out)
    assert code == 0 and created["is_admin"] and created["secret"].startswith("sk-")
    listed = json.loads(run(capsys, "keys", *where, "list", "--json")[1])
    assert [k["id"] for k in listed] == [created["id"]] and "secret" not in listed[0]
    code, _, err = run(capsys, "keys", *where, "create", "--expires", "someday")
    assert code == 1 and "cannot read" in err


def test_keys_from_the_cli_work_in_the_server(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    data = str(tmp_path / "shared")
    secret = json.loads(run(capsys, "keys", "--data-dir", data, "create", "--json")[1])["secret"]

    async def check() -> None:
        platform = await build_platform(PlatformSettings(data_dir=Path(data)))
        try:
            assert platform.bootstrap_secret is None
            assert (await platform.gate.authenticate(secret, None, "m")).key_id is not None
        finally:
            await platform.close()

    asyncio.run(check())


def test_usage_report(capsys: pytest.CaptureFixture[str], where: list[str], db_url: str) -> None:
    created = json.loads(run(capsys, "keys", *where, "create", "--json")[1])

    async def seed() -> None:
        store = await open_store(db_url)
        at = datetime.now(timezone.utc)
        items = [
            (f"id{i}", UsageRecord(f"req{i}", created["id"] if i % 2 else None,
                                   created["prefix"] if i % 2 else "static-00000000", "default",
                                   "qwen" if i < 3 else "other", 10, 20, 0, 0, "stop", 200,
                                   5.0, 50.0, at))
            for i in range(5)
        ]
        await write_batch(store, items)
        await store.close()

    asyncio.run(seed())
    code, out, _ = run(capsys, "usage", *where, "--by", "model")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["qwen"][1] == "3" and rows["other"][1] == "2" and rows["qwen"][-1] == "90"
    report = json.loads(run(capsys, "usage", *where, "--key", created["prefix"], "--json")[1])
    assert report[0]["num_requests"] == 2 and report[0]["total_tokens"] == 60
    report = json.loads(run(capsys, "usage", *where, "--by", "key", "--since", "1h", "--json")[1])
    assert {r["key_id"]: r["num_requests"] for r in report} == {
        created["id"]: 2, "static-00000000": 3
    }
    code, out, _ = run(capsys, "usage", *where, "--records", "2")
    assert code == 0 and "req4" in out and "req3" in out and "req2" not in out
