"""make-model: deterministic random checkpoints that transformers loads as real Qwen models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dashserve import cli
from dashserve.model.config import ModelConfig
from dashserve.model.make import make_model, tensor_specs
from dashserve.model.presets import PRESETS, generation_config, param_count, preset_config

TINY = ["qwen3-tiny", "qwen3-tiny-untied", "qwen2.5-tiny", "qwen3-moe-tiny"]


def test_same_seed_same_bytes(model_dir_factory, tmp_path: Path) -> None:
    first = model_dir_factory("qwen3-tiny")
    again = make_model("qwen3-tiny", tmp_path / "again", seed=0)
    other = make_model("qwen3-tiny", tmp_path / "other", seed=1)
    data = (first / "model.safetensors").read_bytes()
    assert data == (again / "model.safetensors").read_bytes()
    other_data = (other / "model.safetensors").read_bytes()
    assert len(other_data) == len(data) and other_data != data
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes()


@pytest.mark.parametrize("preset", TINY)
def test_transformers_loads_and_runs(model_dir_factory, preset: str) -> None:
    transformers = pytest.importorskip("transformers")
    path = model_dir_factory(preset)
    model, info = transformers.AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}  # no missing/unexpected/mismatched keys
    cfg = PRESETS[preset]
    assert type(model).__name__ == cfg["architectures"][0]
    assert sum(p.numel() for p in model.parameters()) == param_count(cfg)
    with torch.no_grad():
        logits = model(torch.tensor([[9707, 11, 220, 99489, 0]])).logits
    assert logits.shape == (1, 5, 151936) and torch.isfinite(logits).all()
    assert logits.std() > 0
    emb = model.model.embed_tokens.weight
    assert abs(emb.std().item() - 0.02) < 0.001
    tied = model.lm_head.weight.data_ptr() == emb.data_ptr()
    assert tied == cfg["tie_word_embeddings"]


@pytest.mark.parametrize("preset", TINY)
def test_checkpoint_contents(model_dir_factory, preset: str) -> None:
    path = model_dir_factory(preset)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg == preset_config(preset) and cfg["torch_dtype"] == "float32"
    assert "rope_theta" in cfg and cfg["vocab_size"] == 151936
    assert json.loads((path / "generation_config.json").read_text()) == generation_config(cfg)
    with safe_open(path / "model.safetensors", "pt") as f:
        names = list(f.keys())
        assert f.metadata() == {"format": "pt"}
        norm = f.get_tensor("model.layers.1.post_attention_layernorm.weight")
    assert sorted(names) == sorted(s.name for s in tensor_specs(cfg))
    assert not torch.equal(norm, torch.ones(64)) and (norm - 1).abs().max() < 1.0  # random, near one
    assert ("lm_head.weight" in names) == (not cfg["tie_word_embeddings"])
    assert ("model.layers.0.self_attn.q_proj.bias" in names) == (preset == "qwen2.5-tiny")
    assert ("model.layers.0.self_attn.q_norm.weight" in names) == (preset != "qwen2.5-tiny")
    if preset == "qwen3-moe-tiny":
        assert "model.layers.1.mlp.experts.7.down_proj.weight" in names
        assert "model.layers.0.mlp.gate.weight" in names
    mc = ModelConfig.from_dir(path)
    assert (mc.architecture, mc.hidden_size, mc.head_dim) == (cfg["architectures"][0], 64, 16)
    assert mc.num_experts == cfg.get("num_experts", 0)
    assert set(mc.eos_token_ids) == {151645, 151643}


def test_dtype_override(tmp_path: Path) -> None:
    path = make_model("qwen2.5-tiny", tmp_path / "bf16", dtype="bf16")
    assert json.loads((path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with safe_open(path / "model.safetensors", "pt") as f:
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
        bias = f.get_tensor("model.layers.0.self_attn.k_proj.bias")
        assert bias.dtype == torch.bfloat16 and 0 < bias.abs().max() < 0.2
    assert (path / "model.safetensors").stat().st_size < 20_000_000


def test_qwen3_06b_shape_by_arithmetic() -> None:
    cfg = preset_config("qwen3-0.6b")
    assert cfg["torch_dtype"] == "bfloat16" and cfg["rope_theta"] == 1e6
    assert cfg["max_position_embeddings"] == 40960 and cfg["tie_word_embeddings"]
    assert param_count(cfg) == 596_049_920
    numel = sum(torch.Size(s.shape).numel() for s in tensor_specs(cfg))
    assert numel == param_count(cfg) and len(tensor_specs(cfg)) == 310


def test_cli_list_and_make(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["make-model", "--list"]) == 0
    listing = capsys.readouterr().out
    for name in PRESETS:
        assert name in listing
    out = tmp_path / "cli-model"
    assert cli.main(["make-model", "--preset", "qwen3-tiny", "--out", str(out), "--seed", "3", "--dtype", "fp16"]) == 0
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float16"
    assert (out / "tokenizer.json").exists() and (out / "model.safetensors").exists()
    assert cli.main(["make-model"]) == 2
