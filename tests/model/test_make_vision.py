"""make-model's VL presets: checkpoints transformers loads as Qwen2.5-VL / Qwen3-VL, with the
VL chat templates and preprocessor configs; dashserve loads both weight layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dashserve.model.config import ModelConfig
from dashserve.model.loader import load_model
from dashserve.model.make import tensor_specs
from dashserve.model.presets import PRESETS, param_count, preset_config
from dashserve.tokenizer import Tokenizer

VL_TINY = {"qwen2.5-vl-tiny": ("Qwen2_5_VLForConditionalGeneration", 14),
           "qwen3-vl-tiny": ("Qwen3VLForConditionalGeneration", 16)}


@pytest.mark.parametrize("preset", VL_TINY)
def test_transformers_loads_the_vl_presets(model_dir_factory, preset: str) -> None:
    transformers = pytest.importorskip("transformers")
    arch, patch = VL_TINY[preset]
    path = model_dir_factory(preset)
    cls = getattr(transformers, arch)
    model, info = cls.from_pretrained(path, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}  # no missing/unexpected/mismatched keys
    assert sum(p.numel() for p in model.parameters()) == param_count(PRESETS[preset])
    assert model.config.vision_config.patch_size == patch
    emb = model.model.language_model.embed_tokens.weight
    assert model.lm_head.weight.data_ptr() == emb.data_ptr()  # tied, as in the tiny presets


@pytest.mark.parametrize("preset", VL_TINY)
def test_vl_checkpoint_contents(model_dir_factory, preset: str) -> None:
    arch, patch = VL_TINY[preset]
    path = model_dir_factory(preset)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg == preset_config(preset)
    with safe_open(path / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert names == {s.name for s in tensor_specs(cfg)}
    qwen3 = preset.startswith("qwen3")
    # the layouts the published checkpoints use
    assert ("model.visual.blocks.0.attn.qkv.weight" in names) == qwen3
    assert ("visual.blocks.0.attn.qkv.weight" in names) == (not qwen3)
    assert ("model.language_model.embed_tokens.weight" in names) == qwen3
    pre = json.loads((path / "preprocessor_config.json").read_text())
    assert (pre["patch_size"], pre["merge_size"], pre["temporal_patch_size"]) == (patch, 2, 2)
    mc = ModelConfig.from_dir(path)
    assert mc.architecture == arch and mc.vision is not None
    assert mc.vision.patch_size == patch and mc.vision.image_mean == tuple(pre["image_mean"])
    assert mc.mrope_interleaved == qwen3 and sum(mc.mrope_section) == mc.head_dim // 2


@pytest.mark.parametrize("preset", VL_TINY)
def test_vl_chat_template_places_images(model_dir_factory, preset: str) -> None:
    transformers = pytest.importorskip("transformers")
    path = model_dir_factory(preset)
    messages = [
        {"role": "user", "content": [
            {"type": "image", "image": "a.png"}, {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "b.png"}}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "And now?"},
    ]
    ours = Tokenizer.from_dir(path).apply_chat_template(messages)
    ref = transformers.AutoTokenizer.from_pretrained(path).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    assert ours == ref
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    assert f"{image}What is this?{image}<|im_end|>" in ours
    assert ours.endswith("<|im_start|>assistant\n")
    assert ours.startswith("<|im_start|>system\n") == (not preset.startswith("qwen3"))


def _other_layout(name: str) -> str:
    """``visual.*`` + ``model.*`` <-> ``model.visual.*`` + ``model.language_model.*``."""
    if name.startswith("model.visual."):
        return name[len("model."):]
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    if name.startswith("visual."):
        return "model." + name
    if name.startswith("model."):
        return "model.language_model." + name[len("model."):]
    return name


@pytest.mark.parametrize("preset", VL_TINY)
def test_both_weight_layouts_load(model_dir_factory, tmp_path: Path, preset: str) -> None:
    """The same tensors named in the other layout load into the same weights."""
    from safetensors.torch import save_file

    path = model_dir_factory(preset)
    other = tmp_path / "other"
    shutil.copytree(path, other)
    with safe_open(path / "model.safetensors", "pt") as f:
        tensors = {_other_layout(n): f.get_tensor(n) for n in f.keys()}
    assert set(tensors).isdisjoint(set(safe_open(path / "model.safetensors", "pt").keys()) - {
        "lm_head.weight"})
    save_file(tensors, str(other / "model.safetensors"), metadata={"format": "pt"})
    config = ModelConfig.from_dir(path)
    first = load_model(path, config, torch.float32, torch.device("cpu")).state_dict()
    second = load_model(other, config, torch.float32, torch.device("cpu")).state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
