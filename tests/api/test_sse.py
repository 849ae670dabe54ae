"""SSE framing helpers and the native stream switch."""

from __future__ import annotations

import json

from dashserve.api.sse import (
    dump_bytes,
    native_error_event,
    native_event,
    openai_event,
    wants_native_stream,
)


def test_native_event_has_no_spaces_and_one_data_line() -> None:
    frame = native_event(3, {"output": {"text": "a\nb"}, "request_id": "r"}).decode()
    assert frame == ('id:3\nevent:result\n:HTTP_STATUS/200\n'
                     'data:{"output":{"text":"a\\nb"},"request_id":"r"}\n\n')


def test_native_event_keeps_utf8() -> None:
    assert "你好" in native_event(1, {"t": "你好"}).decode()


def test_native_error_event() -> None:
    frame = native_error_event(2, 429, "Throttling", "slow down, data: x", "r1").decode()
    assert frame.split("\n")[:4] == ["id:2", "event:error", ":HTTP_STATUS/429", "status:429"]
    assert '"message":"slow down, data : x"' in frame
    no_status = native_error_event(2, 500, "InternalError", "m", "r", status_line=False)
    assert b"status:" not in no_status


def test_openai_event() -> None:
    assert openai_event({"a": 1}) == b'data: {"a":1}\n\n'


def test_stream_switch() -> None:
    assert wants_native_stream({"x-dashscope-sse": "enable"})
    assert wants_native_stream({"x-dashscope-sse": " Enable "})
    assert wants_native_stream({"accept": "text/event-stream"})
    assert not wants_native_stream({"accept": "application/json; charset=utf-8"})
    assert not wants_native_stream({"x-dashscope-sse": "disable", "accept": "*/*"})


STDLIB_CASES = [
    {"text": "a\nb\tc\r\x00\x1f\x7f \u2028 \"q\" \\ / 你好 😀", "n": 3, "ok": True, "none": None},
    {"choices": [{"delta": {"content": "x"}, "index": 0, "logprobs": None}], "usage": {}},
    [1, -2, 2 ** 63 - 1, "", [], {}],
    {"big": 2 ** 70},  # past 64 bits: written the standard library's way
]


def test_frames_are_the_standard_librarys_compact_utf8_json() -> None:
    for obj in STDLIB_CASES:
        assert dump_bytes(obj) == json.dumps(obj, ensure_ascii=False,
                                             separators=(",", ":")).encode()


def test_floats_and_other_keys_read_back_the_same() -> None:
    obj = {"p": 0.1, "q": 1e-07, "r": -3.5e300, 1: "one"}
    assert json.loads(dump_bytes(obj)) == {"p": 0.1, "q": 1e-07, "r": -3.5e300, "1": "one"}
