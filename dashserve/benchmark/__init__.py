"""Serving benchmark: a pure HTTP client that drives a running server with streaming requests.

Python API::

    from dashserve.benchmark import BenchConfig, run_benchmark_sync, format_table
    result = run_benchmark_sync(BenchConfig("http://127.0.0.1:8000/compatible-mode/v1",
                                            clients=4, prompt_tokens=256, output_tokens=32))
    print(format_table([result]))
"""

from __future__ import annotations

from dashserve.benchmark.client import RequestResult, stream_compat, stream_native
from dashserve.benchmark.report import BenchResult, Distribution, format_table, percentile
from dashserve.benchmark.runner import (
    BenchConfig,
    run_benchmark,
    run_benchmark_sync,
    run_sweep,
    run_sweep_sync,
)
from dashserve.benchmark.workload import PromptFactory, Workload, load_tokenizer

__all__ = [
    "BenchConfig", "BenchResult", "Distribution", "PromptFactory", "RequestResult", "Workload",
    "format_table", "load_tokenizer", "percentile", "run_benchmark", "run_benchmark_sync",
    "run_sweep", "run_sweep_sync", "stream_compat", "stream_native",
]
