"""Prometheus metrics for one app, in its own registry: requests, tokens, latency, engine load.

Label values come from bounded sets only: a model label is a served name or ``"unknown"``
(whatever a client typed), an error code is one of dashserve's own codes. So no client can
grow the exposition or put text into it that cannot be encoded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterator
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from dashserve.contracts.outputs import EngineStats
from dashserve.platform.gate import UsageRecord

logger = logging.getLogger(__name__)

TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TPOT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
UNKNOWN = "unknown"
MAX_UNBOUND_MODELS = 32  # distinct model labels kept when no served names are bound
_SAFE_LABEL = re.compile(r"[A-Za-z0-9._:/@+-]{1,128}")
_SAFE_CODE = re.compile(r"[A-Za-z0-9._]{1,64}")


class WriterStats(Protocol):
    @property
    def num_pending(self) -> int: ...
    @property
    def num_written(self) -> int: ...
    @property
    def num_write_errors(self) -> int: ...


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
        self.errors = Counter(
            "dashserve_errors", "Requests answered with an error (4xx/5xx), by status and code.",
            ["status", "code"], registry=r,
        )
        self._live = _LiveCollector()
        r.register(self._live)
        self._served_names: Callable[[], Collection[str]] | None = None
        self._seen_models: set[str] = set()

    def bind_served_names(self, names: Callable[[], Collection[str]]) -> None:
        """Model labels are restricted to the names this callback returns (or ``unknown``)."""
        self._served_names = names

    def model_label(self, model: str) -> str:
        """``model`` if it is a served name, else ``"unknown"``. Without bound served names,
        the first few well-formed names are kept, then everything is ``unknown``."""
        if not isinstance(model, str) or not _SAFE_LABEL.fullmatch(model):
            return UNKNOWN
        if self._served_names is not None:
            try:
                served = self._served_names()
            except Exception:  # noqa: BLE001 - a label must never fail a request
                return UNKNOWN
            return model if model in served else UNKNOWN
        if model in self._seen_models:
            return model
        if len(self._seen_models) < MAX_UNBOUND_MODELS:
            self._seen_models.add(model)
            return model
        return UNKNOWN

    def bind_engine_stats(self, stats: Callable[[], EngineStats | None]) -> None:
        """Read queue depth, running sequences and KV usage from this callback at each scrape."""
        self._live.engine_stats = stats

    def bind_writer(self, writer: WriterStats) -> None:
        self._live.writer = writer

    def observe_request(self, record: UsageRecord) -> None:
        """Count one finished (or failed, or aborted) request."""
        model = self.model_label(record.model)
        self.requests.labels(model=model, status=str(record.status_code)).inc()
        if record.status_code >= 400:
            self.errors.labels(status=str(record.status_code),
                               code=_code_label(record.error_code)).inc()
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
        """Count a request refused before it ran (any 4xx/5xx answered without a run)."""
        code = _code_label(code)
        self.requests.labels(model=self.model_label(model), status=str(status_code)).inc()
        self.rejected.labels(code=code).inc()
        self.errors.labels(status=str(status_code), code=code).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _code_label(code: str | None) -> str:
    if code is None:
        return "Error"
    return code if _SAFE_CODE.fullmatch(code) else "Error"
