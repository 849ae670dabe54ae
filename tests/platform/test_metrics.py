"""platform.metrics: per-app registry, request observations, live engine and writer gauges."""

from __future__ import annotations

from datetime import datetime, timezone

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from dashserve.contracts.outputs import EngineStats
from dashserve.platform.gate import UsageRecord
from dashserve.platform.metrics import PlatformMetrics


def sample(body: bytes, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def usage(status: int = 200, output_tokens: int = 11) -> UsageRecord:
    return UsageRecord(
        request_id="r", key_id=None, key_prefix="p", workspace="w", model="qwen",
        input_tokens=20, output_tokens=output_tokens, cached_tokens=4, reasoning_tokens=0,
        finish_reason="stop", status_code=status, ttft_ms=100.0, duration_ms=600.0,
        created_at=datetime.now(timezone.utc),
    )


def test_two_apps_do_not_share_collectors() -> None:
    a, b = PlatformMetrics(), PlatformMetrics()  # would raise on a shared registry
    a.observe_request(usage())
    assert sample(a.render()[0], "dashserve_requests_total", model="qwen") == 1.0
    assert sample(b.render()[0], "dashserve_requests_total", model="qwen") is None
    labels = {"model": "qwen", "status": "200"}
    assert REGISTRY.get_sample_value("dashserve_requests_total", labels) is None


def test_request_observations() -> None:
    m = PlatformMetrics()
    m.observe_request(usage())
    m.observe_request(usage(status=500, output_tokens=0))
    m.observe_rejected("qwen", 429, "Throttling.RateQuota")
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    assert sample(body, "dashserve_requests_total", model="qwen", status="200") == 1.0
    assert sample(body, "dashserve_requests_total", model="qwen", status="429") == 1.0
    assert sample(body, "dashserve_input_tokens_total", model="qwen") == 40.0
    assert sample(body, "dashserve_output_tokens_total", model="qwen") == 11.0
    assert sample(body, "dashserve_time_to_first_token_seconds_count", model="qwen") == 2.0
    # one decode sample: (600 - 100) ms over 10 tokens after the first
    assert sample(body, "dashserve_time_per_output_token_seconds_sum", model="qwen") == 0.05
    assert sample(body, "dashserve_rejected_requests_total", code="Throttling.RateQuota") == 1.0


def test_engine_and_writer_gauges_are_read_at_scrape() -> None:
    m = PlatformMetrics()
    stats = {"s": EngineStats(num_waiting=3, num_running=5, num_kv_blocks_total=200,
                              num_kv_blocks_free=50, num_preemptions=2)}
    m.bind_engine_stats(lambda: stats["s"])

    class Writer:
        num_pending = 7
        num_written = 100
        num_write_errors = 1

    m.bind_writer(Writer())
    body = m.render()[0]
    assert sample(body, "dashserve_queue_depth") == 3
    assert sample(body, "dashserve_running_sequences") == 5
    assert sample(body, "dashserve_kv_cache_usage_ratio") == 0.75
    assert sample(body, "dashserve_preemptions_total") == 2
    assert sample(body, "dashserve_usage_queue_depth") == 7
    stats["s"] = EngineStats(num_waiting=0, num_running=1, num_kv_blocks_total=200,
                             num_kv_blocks_free=200)
    assert sample(m.render()[0], "dashserve_queue_depth") == 0


def test_a_failing_engine_does_not_break_the_scrape() -> None:
    m = PlatformMetrics()

    def broken() -> EngineStats:
        raise RuntimeError("engine gone")

    m.bind_engine_stats(broken)
    assert b"dashserve_requests" in m.render()[0]
