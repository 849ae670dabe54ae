"""``dashserve bench serve`` and the Python API end to end against a live fake-engine server."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import dashserve
from dashserve.benchmark import BenchConfig, run_benchmark
from dashserve.cli import main
from tests.integration.conftest import API_KEY, LiveServer, start_server
from tests.utils.fake_engine import FakeEngine

SCRIPT = [f" w{i}" for i in range(8)]
FORBIDDEN = ("dashserve.engine", "dashserve.model", "dashserve.serving", "dashserve.api",
             "dashserve.app", "dashserve.platform", "dashserve.store", "fastapi", "torch")


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    # listed by name: "qwen-plus" comes first, so it is the default model
    engines = {"qwen-plus": FakeEngine(script=SCRIPT, token_delay_s=0.002, cached_tokens=3),
               "xx-broken-model": FakeEngine(fail_after=0)}
    live = start_server(engines)
    yield live
    live.stop()


def _bench(tmp_path: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "bench.json"
    code = main(["bench", "serve", "--prompt-tokens", "48", "--output-tokens", "8",
                 "--json", str(out), *args])
    return code, json.loads(out.read_text("utf-8"))


@pytest.mark.parametrize("api", ["compat", "dashscope"])
def test_cli_runs_each_client_count(server: LiveServer, tmp_path: Path, api: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    engine = server.engines["qwen-plus"]
    before = len(engine.submissions)
    url = server.compat_url if api == "compat" else server.base_url
    code, report = _bench(tmp_path, "--api", api, "--base-url", url, "--api-key", API_KEY,
                          "--clients", "1", "3", "--num-requests", "6", "--label", "fake")
    assert code == 0
    table = capsys.readouterr().out
    assert "fake c=1" in table and "fake c=3" in table and "6 / 0" in table
    assert report["arguments"]["clients"] == [1, 3] and "api_key" not in report["arguments"]
    runs = report["results"]
    assert [(r["clients"], r["completed"], r["failed"]) for r in runs] == [(1, 6, 0), (3, 6, 0)]
    submitted = engine.submissions[before:]
    assert len(submitted) == 2 * (6 + 1)  # one warm-up request per run
    assert len({tuple(s.prompt_token_ids) for s in submitted}) == 14  # no prompt repeats
    for run in runs:
        assert run["config"]["model"] == "qwen-plus" and run["usage_reported"]
        assert run["mean_output_tokens"] == len(SCRIPT) and run["total_output_tokens"] == 48
        assert run["mean_cached_tokens"] == 3
        for key in ("ttft", "itl", "e2e"):
            d = run[key]
            assert 0 < d["p50"] <= d["p90"] <= d["p99"]
        assert run["itl"]["count"] == 6 * (len(SCRIPT) - 1)
        assert run["tpot_mean"] > 0 and run["output_throughput"] > 0
    timed = submitted[1:7] + submitted[8:]
    seen = sum(len(s.prompt_token_ids) for s in timed) / len(timed)
    assert sum(r["mean_prompt_tokens"] for r in runs) / 2 == pytest.approx(seen)
    assert all(s.params.max_tokens == 8 for s in submitted)


def test_failures_are_reported_and_exit_non_zero(server: LiveServer, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _bench(tmp_path, "--base-url", server.compat_url, "--api-key", API_KEY,
                          "--model", "xx-broken-model", "--clients", "2", "--no-warmup")
    (run,) = report["results"]
    assert code == 1 and (run["completed"], run["failed"]) == (0, 8) and run["errors"]
    assert "error (compat c=2)" in capsys.readouterr().out
    code, report = _bench(tmp_path, "--api", "dashscope", "--base-url", server.native_url,
                          "--api-key", "sk-wrong", "--model", "qwen-plus", "--no-warmup")
    (run,) = report["results"]
    assert code == 1 and run["failed"] == 4 and "HTTP 401" in run["errors"][0]


def test_bad_arguments_exit_2(server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "serve", "--base-url", server.compat_url, "--api-key", API_KEY,
                 "--clients", "0"]) == 2
    assert main(["bench", "serve", "--base-url", server.compat_url, "--api-key", API_KEY,
                 "--extra-body", "[1]"]) == 2
    assert "dashserve bench:" in capsys.readouterr().err


async def test_python_api_with_a_duration_and_shared_prefix(server: LiveServer) -> None:
    config = BenchConfig(server.compat_url, api_key=API_KEY, model="qwen-plus", clients=2,
                         duration_s=0.3, prompt_tokens=16, shared_prefix_tokens=64,
                         output_tokens=4, warmup=False, extra_body={"seed": 7})
    result = await run_benchmark(config)
    assert result.completed >= 2 and result.failed == 0 and result.label == "compat"
    assert result.mean_output_tokens == 4 and result.config["duration_s"] == 0.3
    assert "api_key" not in result.config


def test_the_benchmark_is_a_pure_http_client() -> None:
    for path in sorted((Path(dashserve.__file__).parent / "benchmark").glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        assert not {n for n in names if n.startswith(FORBIDDEN)}, path.name
