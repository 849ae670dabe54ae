"""Image tokens on the bill: the nullable usage_records.image_tokens column (0004_media)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

from sqlalchemy import select

from dashserve.platform import spool
from dashserve.platform.metering import UsageWriter, WriterConfig
from dashserve.store.db import Store
from dashserve.store.tables import usage_records
from tests.platform.test_metering import FAST, record


async def test_image_tokens_are_stored(store: Store) -> None:
    writer = UsageWriter(store, WriterConfig(**FAST))
    await writer.start()
    with_images = dataclasses.replace(record(tokens=1300), image_tokens=1026)
    text_only = record(tokens=5)
    for r in (with_images, text_only):
        await writer.submit(r)
    assert await writer.wait_idle()
    await writer.stop()
    async with store.transaction() as s:
        rows = dict((await s.execute(select(usage_records.c.request_id,
                                            usage_records.c.image_tokens))).all())
    assert rows == {with_images.request_id: 1026, text_only.request_id: None}


def test_spool_keeps_image_tokens_and_reads_old_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    item = (uuid.uuid4().hex, dataclasses.replace(record(), image_tokens=66))
    spool.append(path, [item])
    old = json.loads(path.read_text())
    del old["record"]["image_tokens"]  # a line spooled before the column existed
    old["record_id"] = "old"
    with path.open("a") as f:
        f.write(json.dumps(old) + "\n")
    claimed = dict(spool.claim(path))
    assert claimed[item[0]].image_tokens == 66 and claimed["old"].image_tokens is None
