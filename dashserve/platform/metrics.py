"""Prometheus metrics for one app, in its own registry: requests, tokens, latency, engine load."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from dashserve.engine.outputs import EngineStats
from dashserve.platform.gate import UsageRecord

logger = logging.getLogger(__name__)

TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TPOT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class WriterStats(Protocol):
    num_pending: int
    num_written: int
    num_write_errors: int


class _LiveCollector(Collector):
    """Reads engine and writer state at scrape time, so gauges are never stale."""

    def __init__(self) -> None:
        self.engine_stats: Callable[[], EngineStats | None] | None = None
        self.writer: WriterStats | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._engine_metrics()
        yield from self._writer_metrics()

    def _engine_metrics(self) -> Iterator[Metric]:
        if self.engine_stats is None:
            return
        try:
            stats = self.engine_stats()
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the engine did
            logger.error("engine stats unavailable for metrics: %s", exc)
            return
        if stats is None:
            return
        yield GaugeMetricFamily(
            "dashserve_queue_depth", "Requests waiting to be scheduled.", value=stats.num_waiting
        )
        yield GaugeMetricFamily(
            "dashserve_running_sequences", "Sequences being generated.", value=stats.num_running
        )
        yield GaugeMetricFamily(
            "dashserve_kv_cache_usage_ratio", "Fraction of KV cache blocks in use.",
            value=stats.kv_usage,
        )
        yield GaugeMetricFamily(
            "dashserve_kv_cache_blocks", "KV cache blocks in total.",
            value=stats.num_kv_blocks_total,
        )
        yield CounterMetricFamily(
            "dashserve_preemptions", "Sequences preempted for lack of KV cache.",
            value=stats.num_preemptions,
        )

    def _writer_metrics(self) -> Iterator[Metric]:
        if self.writer is None:
            return
        yield GaugeMetricFamily(
            "dashserve_usage_queue_depth", "Usage records not yet stored.",
            value=self.writer.num_pending,
        )
        yield CounterMetricFamily(
            "dashserve_usage_records_written", "Usage records stored.",
            value=self.writer.num_written,
        )
        yield CounterMetricFamily(
            "dashserve_usage_write_errors", "Failed usage write attempts (retried).",
            value=self.writer.num_write_errors,
        )


class PlatformMetrics:
    """Collectors for one app; ``render`` produces the ``/metrics`` body."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "dashserve_requests", "Finished requests.", ["model", "status"], registry=r
        )
        self.input_tokens = Counter(
            "dashserve_input_tokens", "Prompt tokens processed.", ["model"], registry=r
        )
        self.output_tokens = Counter(
            "dashserve_output_tokens", "Tokens generated.", ["model"], registry=r
        )
        self.cached_tokens = Counter(
            "dashserve_cached_tokens", "Prompt tokens served from the prefix cache.", ["model"],
            registry=r,
        )
        self.ttft = Histogram(
            "dashserve_time_to_first_token_seconds", "Time to first token.", ["model"],
            buckets=TTFT_BUCKETS_S, registry=r,
        )
        self.tpot = Histogram(
            "dashserve_time_per_output_token_seconds", "Time per output token after the first.",
            ["model"], buckets=TPOT_BUCKETS_S, registry=r,
        )
        self.duration = Histogram(
            "dashserve_request_duration_seconds", "Request duration.", ["model"],
            buckets=DURATION_BUCKETS_S, registry=r,
        )
        self.rejected = Counter(
            "dashserve_rejected_requests", "Requests refused before running, by error code.",
            ["code"], registry=r,
        )
        self._live = _LiveCollector()
        r.register(self._live)

    def bind_engine_stats(self, stats: Callable[[], EngineStats | None]) -> None:
        """Read queue depth, running sequences and KV usage from this callback at each scrape."""
        self._live.engine_stats = stats

    def bind_writer(self, writer: WriterStats) -> None:
        self._live.writer = writer

    def observe_request(self, record: UsageRecord) -> None:
        """Count one finished (or failed, or aborted) request."""
        model = record.model
        self.requests.labels(model=model, status=str(record.status_code)).inc()
        self.input_tokens.labels(model=model).inc(record.input_tokens)
        self.output_tokens.labels(model=model).inc(record.output_tokens)
        self.cached_tokens.labels(model=model).inc(record.cached_tokens)
        self.duration.labels(model=model).observe(record.duration_ms / 1000.0)
        if record.ttft_ms is not None:
            self.ttft.labels(model=model).observe(record.ttft_ms / 1000.0)
            if record.output_tokens > 1:
                decode_ms = max(0.0, record.duration_ms - record.ttft_ms)
                self.tpot.labels(model=model).observe(
                    decode_ms / 1000.0 / (record.output_tokens - 1)
                )

    def observe_rejected(self, model: str, status_code: int, code: str) -> None:
        """Count a request refused by authentication, access rules or admission."""
        self.requests.labels(model=model, status=str(status_code)).inc()
        self.rejected.labels(code=code).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
