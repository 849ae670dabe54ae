"""An engine started before the native CPU kernels were built serves on the torch path and
switches to them between steps, mid-request, once they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashserve.contracts.params import SamplingParams
from dashserve.contracts.request import EngineRequest
from dashserve.engine.engine import EngineConfig, LLMEngine
from dashserve.model import cpu_kernels, kernel_build
from dashserve.model.cpu_linear import NativeLinear, onednn_bf16

pytestmark = pytest.mark.skipif(
    cpu_kernels.decode_ops_module() is None or cpu_kernels.paged_decode_module() is None,
    reason="no native CPU kernels on this machine")


def test_switch_between_steps_mid_request(model_dir_factory, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    built = kernel_build.cache_root().parent
    monkeypatch.setattr(cpu_kernels, "_loaded", {})  # as in a fresh process
    monkeypatch.setattr(cpu_kernels, "_failed", set())
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # nothing built there
    engine = LLMEngine(EngineConfig(model=str(model_dir_factory("qwen3-tiny", dtype="bf16")),
                                    dtype="bf16", max_model_len=256, kernels="background"))
    linears = [m for m in engine.runner.model.modules() if isinstance(m, NativeLinear)]
    assert engine.kernels_pending and linears
    assert engine.runner.decode_kernel is None and all(m._kernels is None for m in linears)
    if not onednn_bf16():  # the torch path meanwhile runs on weights widened once
        assert all(m._widened is not None for m in linears)

    engine.add_request(EngineRequest("a", list(range(200, 240)), SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)))
    tokens: list[int] = []
    for _ in range(4):  # prefill and a few decode steps on the torch path
        tokens += [t for ev in engine.step() for t in ev.token_ids]
    assert 0 < len(tokens) < 12

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(built))  # "the background build finished"
    assert engine.attach_kernels() > len(linears)
    assert not engine.kernels_pending
    assert engine.runner.decode_kernel is not None
    assert all(m._kernels is not None and m._widened is None for m in linears)
    while engine.has_unfinished():
        tokens += [t for ev in engine.step() for t in ev.token_ids]
    assert len(tokens) == 12


def test_wait_mode_builds_first(model_dir_factory) -> None:
    engine = LLMEngine(EngineConfig(model=str(model_dir_factory("qwen3-tiny", dtype="bf16")),
                                    dtype="bf16", max_model_len=256))
    assert not engine.kernels_pending and engine.runner.decode_kernel is not None


def test_warm_up_leaves_the_engine_idle(model_dir_factory) -> None:
    engine = LLMEngine(EngineConfig(model=str(model_dir_factory("qwen3-tiny")), dtype="fp32",
                                    max_model_len=256))
    assert engine.warm_up() > 0
    stats = engine.stats()
    assert not engine.has_unfinished() and stats.num_running == stats.num_waiting == 0
    assert engine.grammar_compiler is not None  # the grammar library's set-up is paid
    assert stats.num_kv_blocks_free == stats.num_kv_blocks_total  # (cached blocks count as free)
