"""`dashserve serve`: flags → Settings, the cached demo model, and a real start-up/shutdown."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dashserve import serve_cmd
from dashserve.cli import build_parser
from dashserve.config import Settings
from tests.utils.http import get_json


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_flags_to_settings(tmp_path: Path) -> None:
    args = parse("--model", "/m/A", "--served-model-name", "qwen-plus", "qwen3-8b",
                 "--model", "/m/B", "--api-key", "k1", "--api-key", "k2", "--port", "9000",
                 "--data-dir", str(tmp_path), "--max-model-len", "2048", "--partial-timeout", "5")
    s = serve_cmd.settings_from_args(args)
    assert [spec.names for spec in s.models] == [("qwen-plus", "qwen3-8b"), ("B",)]
    assert (s.api_keys, s.port, s.data_dir) == (("k1", "k2"), 9000, tmp_path)
    assert s.max_model_len == 2048 and s.partial_response_timeout_s == 5
    assert s.engine_options(s.models[0]).max_model_len == 2048


def test_names_for_the_demo() -> None:
    s = serve_cmd.settings_from_args(parse("--served-model-name", "a", "b"))
    assert s.is_demo and s.demo_names == ("a", "b")


def test_unset_flags_leave_env_and_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSERVE_PORT", "9123")
    assert serve_cmd.settings_from_args(parse()).port == 9123


def test_invalid_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--model", "a", "--served-model-name", "x", "--model", "b",
                 "--served-model-name", "x")
    assert serve_cmd.run(args) == 2
    assert "invalid settings" in capsys.readouterr().err


def test_demo_model_is_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_make(preset: str, out: Path, seed: int = 0, dtype: str | None = None,
                  **options: object) -> Path:
        calls.append(out)
        assert options["demo_max_new_tokens"] == serve_cmd.DEMO_MAX_NEW_TOKENS
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        marker = {"dashserve_demo_max_new_tokens": options["demo_max_new_tokens"]}
        (out / "generation_config.json").write_text(json.dumps(marker))
        return out

    monkeypatch.setattr("dashserve.model.make.make_model", fake_make)
    s = Settings(data_dir=tmp_path, demo_preset="qwen3-tiny")
    first = serve_cmd.ensure_demo_model(s)
    second = serve_cmd.ensure_demo_model(s)
    assert first == second == tmp_path / "models" / "demo-qwen3-tiny"
    assert [c.name.split(".tmp-")[0] for c in calls] == ["demo-qwen3-tiny", "demo-qwen3-vl-tiny"]
    assert (first / "config.json").is_file()


def test_banner_is_loud() -> None:
    banner = serve_cmd.demo_banner(Settings())
    assert "GIBBERISH BY DESIGN" in banner and "qwen-plus" in banner
    assert banner.splitlines()[0].startswith("####")


@pytest.mark.slow
def test_serve_demo_end_to_end(tmp_path: Path) -> None:
    """The real engine on a tiny random model: loads, answers, shuts down on SIGTERM."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DASHSERVE_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashserve", "serve", "--demo-preset", "qwen3-tiny",
         "--port", str(port), "--api-key", "sk-e2e", "--max-model-len", "512"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        status = 0
        while time.monotonic() < deadline:
            try:
                status, health = get_json(base + "/health")
            except OSError:
                time.sleep(0.2)
                continue
            if status == 200:
                break
            assert status == 503 and health["status"] == "loading"
            time.sleep(0.2)
        assert status == 200
        body = json.dumps({"model": "qwen-plus", "input": {"prompt": "hi"},
                           "parameters": {"max_tokens": 5, "result_format": "message"}})
        request = urllib.request.Request(
            base + "/api/v1/services/aigc/text-generation/generation", data=body.encode(),
            headers={"Authorization": "Bearer sk-e2e", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            answer = json.loads(r.read())
        tokens = answer["usage"]["output_tokens"]  # the demo may end its answer on its own
        finish = answer["output"]["choices"][0]["finish_reason"]
        assert (tokens, finish) == (5, "length") or (1 <= tokens < 5 and finish == "stop")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert "GIBBERISH BY DESIGN" in output
    assert (tmp_path / "models" / "demo-qwen3-tiny" / "config.json").is_file()
    assert "Application shutdown complete" in output


def test_demo_checkpoint_asks_for_a_short_default_answer(tmp_path: Path) -> None:
    """A demo cached by an older version (no default, no circuit) is made again; real
    checkpoints never carry either."""
    from safetensors import safe_open

    from dashserve.model import demo_weights
    from dashserve.model.config import DEMO_MAX_TOKENS_KEY, ModelConfig
    from dashserve.model.make import make_model

    plain = make_model("qwen3-tiny", tmp_path / "plain")
    assert DEMO_MAX_TOKENS_KEY not in json.loads((plain / "generation_config.json").read_text())
    assert ModelConfig.from_dir(plain).demo_max_new_tokens is None

    s = Settings(data_dir=tmp_path / "data", demo_preset="qwen3-tiny", demo_vl_preset=None)
    old = s.demo_dir
    old.parent.mkdir(parents=True)
    os.replace(plain, old)  # a cached demo from before
    assert serve_cmd.ensure_demo_model(s) == old
    assert ModelConfig.from_dir(old).demo_max_new_tokens == serve_cmd.DEMO_MAX_NEW_TOKENS
    with safe_open(str(old / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.norm.weight")[demo_weights.MARK] == 0
    assert sorted(p.name for p in old.parent.iterdir()) == [old.name]


def test_log_format_from_flag_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve_cmd.settings_from_args(parse()).log_format == "text"
    assert serve_cmd.settings_from_args(parse("--log-format", "json")).log_format == "json"
    config = tmp_path / "dashserve.toml"
    config.write_text('log_format = "json"\n')
    assert serve_cmd.settings_from_args(parse("--config", str(config))).log_format == "json"
    monkeypatch.setenv("DASHSERVE_LOG_FORMAT", "json")
    assert serve_cmd.settings_from_args(parse()).log_format == "json"
    with pytest.raises(SystemExit):
        parse("--log-format", "xml")


async def test_admission_and_static_key_limits_set_by_flag_env_or_file_apply(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each limit reaches the app ``serve`` builds, and refuses what it should over HTTP."""
    import httpx

    from dashserve.contracts.outputs import EngineStats
    from tests.utils.fake_engine import FakeEngine

    config = tmp_path / "dashserve.toml"
    config.write_text("max_waiting = 3\n")
    monkeypatch.setenv("DASHSERVE_API_KEY_RPM", "2")
    s = serve_cmd.settings_from_args(parse(
        "--config", str(config), "--max-kv-usage", "0.5", "--max-inflight-per-model", "7",
        "--api-key", "k", "--api-key-tpm", "100000", "--api-key-concurrency", "2",
        "--admin-key", "adm", "--data-dir", str(tmp_path)))
    limits = s.platform_settings().static_limits
    assert (limits.rpm, limits.tpm, limits.max_concurrency) == (2, 100000, 2)
    engine = FakeEngine()
    queue = {"waiting": 0, "free": 64}
    engine.stats = lambda: EngineStats(  # type: ignore[method-assign]
        num_waiting=queue["waiting"], num_running=0, num_kv_blocks_total=64,
        num_kv_blocks_free=queue["free"])
    app = serve_cmd.build_app(s, engines={"qwen-plus": engine})
    assert app.state.service.max_inflight_per_engine == 7
    body = {"model": "qwen-plus", "input": {"prompt": "hi"}}
    url = "/api/v1/services/aigc/text-generation/generation"
    key = {"Authorization": "Bearer k"}

    async def answer(waiting: int, free: int = 64) -> tuple[int, str]:
        queue.update(waiting=waiting, free=free)
        r = await c.post(url, headers=key, json=body)
        return r.status_code, r.json().get("code", "") + " " + r.json().get("message", "")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await answer(0))[0] == 200
            status, text = await answer(3)  # max_waiting 3, from the file
            assert status == 429 and text.startswith("Throttling ") and "waiting" in text
            assert (await answer(2))[0] == 200  # under it: served
            status, text = await answer(1, free=32)  # a queue and half the KV cache: 0.5
            assert status == 429 and "KV cache" in text
            status, text = await answer(0)  # the third request this minute: rpm 2, from env
            assert status == 429 and text.startswith("Throttling.RateQuota ")
            assert (await c.get("/metrics")).status_code == 200  # mounted by create_app
            r = await c.get("/admin/v1/keys", headers={"Authorization": "Bearer adm"})
            assert r.status_code == 200
