"""upstream.http.dumps: compact JSON through orjson, the standard library where orjson refuses."""

from __future__ import annotations

import json

from dashserve.upstream.http import dumps


def test_bodies_are_compact_json_equal_to_the_standard_librarys() -> None:
    body = {"prompt": [151644, 872, 198], "temperature": 0.7, "stop": ["\n\n", "é"],
            "json_schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
            "seed": 2**32 - 1, "ignore_eos": False, "grammar": None}
    assert dumps(body) == json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(dumps(body)) == body


def test_integers_past_64_bits_fall_back_to_the_standard_library() -> None:
    body = {"json_schema": {"type": "integer", "maximum": 2**70}}
    assert json.loads(dumps(body)) == body
