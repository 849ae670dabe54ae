"""Benchmark statistics: per-run summary of request results, a text table and JSON."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dashserve.benchmark.client import RequestResult

PERCENTILES = (50, 90, 99)
_MAX_ERRORS = 5
_REQUEST_ID = re.compile(r'"request_id"\s*:\s*"[^"]*"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-'
                         r'[0-9a-f]{4}-[0-9a-f]{12}|chatcmpl-[\w-]+')


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class Distribution:
    """Mean and percentiles of one latency, in seconds."""

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    count: int = 0

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        p50, p90, p99 = (percentile(values, q) for q in PERCENTILES)
        return cls(_mean(values), p50, p90, p99, len(values))


@dataclass
class BenchResult:
    """One benchmark run (one server, one client count)."""

    label: str
    clients: int
    completed: int
    failed: int
    wall_s: float
    request_throughput: float
    output_throughput: float
    input_throughput: float | None
    total_output_tokens: int
    total_input_tokens: int | None
    ttft: Distribution
    itl: Distribution
    tpot_mean: float | None
    e2e: Distribution
    mean_prompt_tokens: float | None
    mean_cached_tokens: float | None
    mean_output_tokens: float | None
    usage_reported: bool
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distinct_errors(messages: Sequence[str], limit: int = _MAX_ERRORS) -> list[str]:
    """The first ``limit`` distinct messages (request ids ignored), each with its count."""
    counts: dict[str, list[Any]] = {}
    for message in messages:
        key = _REQUEST_ID.sub("", message)
        counts.setdefault(key, [message, 0])[1] += 1
    return [msg if n == 1 else f"{msg} (x{n})" for msg, n in list(counts.values())[:limit]]


def _tpot(r: RequestResult) -> float | None:
    if r.ttft_s is None or r.output_tokens < 2:
        return None
    return (r.e2e_s - r.ttft_s) / (r.output_tokens - 1)


def summarize(label: str, clients: int, results: Sequence[RequestResult], wall_s: float,
              config: dict[str, Any] | None = None) -> BenchResult:
    """Aggregate the requests of one run; only completed requests feed the statistics."""
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    wall = max(wall_s, 1e-9)
    out_total = sum(r.output_tokens for r in ok)
    prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    cached = [r.cached_tokens for r in ok if r.cached_tokens is not None]
    in_total = sum(prompts) if prompts and len(prompts) == len(ok) else None
    usage = bool(ok) and all(r.usage_reported for r in ok)
    notes = []
    if ok and not usage:
        notes.append("the server did not report usage for every request: output tokens "
                     "were counted as content chunks")
    errors = distinct_errors([r.error or "unknown error" for r in failed])
    return BenchResult(
        label=label, clients=clients, completed=len(ok), failed=len(failed), wall_s=wall_s,
        request_throughput=len(ok) / wall, output_throughput=out_total / wall,
        input_throughput=None if in_total is None else in_total / wall,
        total_output_tokens=out_total, total_input_tokens=in_total,
        ttft=Distribution.of([r.ttft_s for r in ok if r.ttft_s is not None]),
        itl=Distribution.of([g for r in ok for g in r.itl_s]),
        tpot_mean=_mean([t for t in map(_tpot, ok) if t is not None]),
        e2e=Distribution.of([r.e2e_s for r in ok]),
        mean_prompt_tokens=_mean(prompts), mean_cached_tokens=_mean(cached),
        mean_output_tokens=_mean([r.output_tokens for r in ok]),
        usage_reported=usage, errors=errors, notes=notes, config=dict(config or {}),
    )


def _num(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _rows(r: BenchResult) -> list[tuple[str, str]]:
    ms = 1000.0
    rows = [("completed / failed", f"{r.completed} / {r.failed}"),
            ("wall time (s)", _num(r.wall_s, digits=2)),
            ("requests/s", _num(r.request_throughput, digits=2)),
            ("output tok/s", _num(r.output_throughput)),
            ("input tok/s", _num(r.input_throughput))]
    for name, dist, scale, unit in (("TTFT", r.ttft, ms, "ms"), ("ITL", r.itl, ms, "ms"),
                                    ("e2e", r.e2e, 1.0, "s")):
        digits = 1 if unit == "ms" else 3
        rows += [(f"{name} p{q} ({unit})", _num(getattr(dist, f"p{q}"), scale, digits))
                 for q in PERCENTILES]
        if name == "ITL":
            rows.append(("TPOT mean (ms)", _num(r.tpot_mean, ms)))
    rows += [("mean prompt tokens", _num(r.mean_prompt_tokens)),
             ("mean cached tokens", _num(r.mean_cached_tokens)),
             ("mean output tokens", _num(r.mean_output_tokens)),
             ("usage reported", "yes" if r.usage_reported else "no")]
    return rows


def format_table(results: Sequence[BenchResult]) -> str:
    """Metrics as rows, one column per run; errors and notes listed underneath."""
    if not results:
        return "(no runs)"
    headers = ["metric"] + [f"{r.label} c={r.clients}" for r in results]
    body = [[name] for name, _ in _rows(results[0])]
    for r in results:
        for row, (_, value) in zip(body, _rows(r), strict=True):
            row.append(value)
    widths = [max(len(row[i]) for row in [headers, *body]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)])

    out = [line(headers), "  ".join("-" * w for w in widths)] + [line(row) for row in body]
    for r in results:
        for note in r.notes:
            out.append(f"note ({r.label} c={r.clients}): {note}")
        for err in r.errors:
            out.append(f"error ({r.label} c={r.clients}): {err}")
    return "\n".join(out)
