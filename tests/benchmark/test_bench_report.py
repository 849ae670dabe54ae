"""Benchmark statistics on known inputs: percentiles, per-run summary, errors and the table."""

from __future__ import annotations

import pytest

from dashserve.benchmark.client import RequestResult
from dashserve.benchmark.report import (
    Distribution,
    distinct_errors,
    format_table,
    percentile,
    summarize,
)


def test_percentile_interpolates_linearly_between_ranks() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 90) == pytest.approx(4.6)
    assert percentile(values, 99) == pytest.approx(4.96)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 5.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_distribution_of_values() -> None:
    d = Distribution.of([float(i) for i in range(1, 101)])
    assert d.count == 100 and d.mean == pytest.approx(50.5)
    assert d.p50 == pytest.approx(50.5) and d.p90 == pytest.approx(90.1)
    assert d.p99 == pytest.approx(99.01)
    assert Distribution.of([]) == Distribution()


def _ok(ttft: float, e2e: float, out: int, prompt: int, cached: int | None = 0,
        itl: list[float] | None = None, usage: bool = True) -> RequestResult:
    return RequestResult(ok=True, ttft_s=ttft, e2e_s=e2e, output_tokens=out, prompt_tokens=prompt,
                         cached_tokens=cached, itl_s=itl or [], usage_reported=usage,
                         chunks=out, finish_reason="length")


def test_summary_of_a_run() -> None:
    results = [_ok(0.1, 1.1, 11, 100, 0, [0.1] * 10), _ok(0.3, 2.3, 21, 300, 64, [0.1] * 20),
               RequestResult(error="HTTP 500: boom"), RequestResult(error="HTTP 500: boom")]
    r = summarize("x", 2, results, wall_s=4.0, config={"seed": 1})
    assert (r.completed, r.failed) == (2, 2)
    assert r.request_throughput == pytest.approx(0.5)
    assert r.output_throughput == pytest.approx(32 / 4) and r.total_output_tokens == 32
    assert r.input_throughput == pytest.approx(400 / 4) and r.total_input_tokens == 400
    assert r.ttft.p50 == pytest.approx(0.2) and r.ttft.count == 2
    assert r.itl.count == 30 and r.itl.p99 == pytest.approx(0.1)
    assert r.tpot_mean == pytest.approx(0.1)  # (1.1-0.1)/10 and (2.3-0.3)/20
    assert r.e2e.p50 == pytest.approx(1.7)
    assert r.mean_prompt_tokens == 200 and r.mean_cached_tokens == 32
    assert r.mean_output_tokens == 16 and r.usage_reported and not r.notes
    assert r.errors == ["HTTP 500: boom (x2)"]
    assert r.to_dict()["config"] == {"seed": 1} and r.to_dict()["ttft"]["count"] == 2


def test_summary_without_usage_says_so() -> None:
    r = summarize("x", 1, [_ok(0.1, 0.5, 5, None, None, usage=False)], wall_s=1.0)
    assert not r.usage_reported and "content chunks" in r.notes[0]
    assert r.input_throughput is None and r.mean_prompt_tokens is None
    assert r.tpot_mean == pytest.approx(0.1)


def test_all_failed_summary_has_no_latencies() -> None:
    r = summarize("x", 1, [RequestResult(error="e")], wall_s=0.5)
    assert r.completed == 0 and r.failed == 1 and r.ttft.p50 is None and r.tpot_mean is None
    assert r.request_throughput == 0.0 and r.errors == ["e"]


def test_distinct_errors_ignore_request_ids() -> None:
    msgs = ['HTTP 401: {"code":"x","request_id":"a1"}', 'HTTP 401: {"code":"x","request_id":"b2"}',
            "err 3f2b6c1e-1111-2222-3333-444455556666", "err 00000000-1111-2222-3333-444455556666",
            "other"]
    out = distinct_errors(msgs)
    assert out == ['HTTP 401: {"code":"x","request_id":"a1"} (x2)',
                   "err 3f2b6c1e-1111-2222-3333-444455556666 (x2)", "other"]
    assert len(distinct_errors([f"e{i}" for i in range(20)])) == 5


def test_table_has_one_column_per_run() -> None:
    runs = [summarize("srv", c, [_ok(0.25, 1.0, 4, 10, itl=[0.25] * 3)], wall_s=1.0)
            for c in (1, 4)]
    runs[1].errors.append("HTTP 500: boom")
    text = format_table(runs)
    lines = text.splitlines()
    assert "srv c=1" in lines[0] and "srv c=4" in lines[0]
    ttft = next(line for line in lines if line.startswith("TTFT p50 (ms)"))
    assert ttft.split()[-2:] == ["250.0", "250.0"]
    assert "error (srv c=4): HTTP 500: boom" in text
    assert format_table([]) == "(no runs)"
