"""inspection.header and inspection.rules: the header's forms; rules per workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashserve.errors import InvalidRequest
from dashserve.inspection.header import InspectionRequest, parse_inspection_header
from dashserve.inspection.rules import RuleInspector, RuleStore


@pytest.mark.parametrize(("value", "expected"), [
    (None, InspectionRequest()),
    ("", InspectionRequest()),
    ('{"input":"cip","output":"cip"}', InspectionRequest(True, True)),
    ('{"input": "cip"}', InspectionRequest(True, False)),
    ('{"output": "CIP", "input": "none"}', InspectionRequest(False, True)),
    ("{}", InspectionRequest()),
    ("enable", InspectionRequest(True, True)),  # the dashscope SDK's environment switch
])
def test_header_forms(value: str | None, expected: InspectionRequest) -> None:
    assert parse_inspection_header(value) == expected


@pytest.mark.parametrize("value", [
    "cip", "{input: cip}", '["input"]', '{"input": true}', '{"input": "strict"}',
    '{"inputs": "cip"}', '"cip"',
])
def test_malformed_headers(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_inspection_header(value)
    assert caught.value.param == "X-DashScope-DataInspection"


async def test_rules_per_workspace(tmp_path: Path) -> None:
    store = RuleStore(tmp_path / "rules.sqlite3", keywords=("configured",))
    inspector = RuleInspector(store)
    everywhere = store.add("*", "keyword", "Forbidden")
    store.add("ws-1", "regex", r"secret-\d{4}")
    assert await inspector.blocked("a FORBIDDEN word", "ws-2")
    assert await inspector.blocked("token secret-1234 here", "ws-1")
    assert not await inspector.blocked("token secret-1234 here", "ws-2")
    assert not await inspector.blocked("token secret-12 here", "ws-1")
    assert await inspector.blocked("configured word", None)
    assert not await inspector.blocked("harmless", "ws-1")
    assert [r.pattern for r in store.list("ws-1")] == [r"secret-\d{4}"]
    assert len(store.list()) == 2
    assert store.delete(everywhere.id) and not store.delete(everywhere.id)
    assert not await inspector.blocked("a forbidden word", "ws-2")  # the cache was dropped
    store.close()
    again = RuleStore(tmp_path / "rules.sqlite3")
    assert [r.workspace for r in again.list()] == ["ws-1"]


def test_keywords_are_literal_and_bad_patterns_refused(tmp_path: Path) -> None:
    store = RuleStore(tmp_path / "rules.sqlite3")
    store.add("*", "keyword", "a.b")
    matcher = store.matcher("x")
    assert matcher is not None and matcher.search("a.b") and not matcher.search("axb")
    for kind, pattern in (("regex", "(unclosed"), ("glob", "x"), ("keyword", ""),
                          ("keyword", "x" * 1001)):
        with pytest.raises(InvalidRequest):
            store.add("*", kind, pattern)
    with pytest.raises(InvalidRequest):
        store.add("", "keyword", "x")
    with pytest.raises(InvalidRequest):
        RuleStore(tmp_path / "other.sqlite3", patterns=("[bad",))
    assert not (tmp_path / "other.sqlite3").exists()  # nothing opened before first use
