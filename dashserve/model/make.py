"""``dashserve make-model``: write a random-weight Qwen checkpoint directory (config, weights,
tokenizer).

Weights are drawn without transformers: one ``torch.Generator`` seeded with ``seed`` fills the
tensors in a fixed order (normal(0, 0.02) for matrices, 1 + normal(0, 0.1) for norms, normal(0, 0.02) for biases), each
created directly in the target dtype, and streamed one by one into ``model.safetensors`` with a
fixed header, so the same preset, seed and dtype always give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from dashserve.model import demo_weights, make_audio
from dashserve.model.config import DEMO_MAX_TOKENS_KEY
from dashserve.model.make_vision import (
    flat_text,
    is_vl,
    published_name,
    vision_specs,
    write_vl_files,
)
from dashserve.model.make_vision import generation_config as vl_generation_config
from dashserve.model.presets import (
    DESCRIPTIONS,
    PRESETS,
    generation_config,
    head_dim,
    is_moe_layer,
    param_count,
    preset_config,
)

if TYPE_CHECKING:  # torch is imported when weights are written, not for --list or --help
    import torch

log = logging.getLogger(__name__)

SAFETENSORS_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
INIT_STD = 0.02
CHUNK_ELEMENTS = 1 << 23  # random fill granularity, bounds temporary memory


class TensorSpec(NamedTuple):
    name: str
    shape: tuple[int, ...]
    init: str  # "normal" | "ones" | "zeros" | "fan_in"


def _layer_specs(cfg: dict[str, Any], i: int) -> list[TensorSpec]:
    h, hd = cfg["hidden_size"], head_dim(cfg)
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    p = f"model.layers.{i}."
    specs = [TensorSpec(p + "input_layernorm.weight", (h,), "ones")]
    for proj, rows in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
        specs.append(TensorSpec(f"{p}self_attn.{proj}.weight", (rows, h), "normal"))
        if cfg["model_type"] == "qwen2" or cfg.get("attention_bias"):
            specs.append(TensorSpec(f"{p}self_attn.{proj}.bias", (rows,), "zeros"))
    specs.append(TensorSpec(p + "self_attn.o_proj.weight", (h, q), "normal"))
    if cfg["model_type"] != "qwen2":
        specs += [TensorSpec(p + "self_attn.q_norm.weight", (hd,), "ones"),
                  TensorSpec(p + "self_attn.k_norm.weight", (hd,), "ones")]
    specs.append(TensorSpec(p + "post_attention_layernorm.weight", (h,), "ones"))
    if is_moe_layer(cfg, i):
        mi = cfg["moe_intermediate_size"]
        specs.append(TensorSpec(p + "mlp.gate.weight", (cfg["num_experts"], h), "normal"))
        for e in range(cfg["num_experts"]):
            specs += _mlp_specs(f"{p}mlp.experts.{e}.", h, mi)
    else:
        specs += _mlp_specs(p + "mlp.", h, cfg["intermediate_size"])
    return specs


def _mlp_specs(prefix: str, hidden: int, inter: int) -> list[TensorSpec]:
    return [TensorSpec(prefix + "gate_proj.weight", (inter, hidden), "normal"),
            TensorSpec(prefix + "up_proj.weight", (inter, hidden), "normal"),
            TensorSpec(prefix + "down_proj.weight", (hidden, inter), "normal")]


def tensor_specs(cfg: dict[str, Any]) -> list[TensorSpec]:
    """Every tensor of the checkpoint, with Hugging Face names, in file and fill order."""
    if make_audio.is_audio(cfg):
        specs = tensor_specs(make_audio.flat_text(cfg)) + [
            TensorSpec(*s) for s in make_audio.audio_specs(cfg)]
        return [spec._replace(name=make_audio.published_name(spec.name)) for spec in specs]
    if is_vl(cfg):
        specs = tensor_specs(flat_text(cfg)) + [TensorSpec(*s) for s in vision_specs(cfg)]
        return [spec._replace(name=published_name(cfg, spec.name)) for spec in specs]
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    specs = [TensorSpec("model.embed_tokens.weight", (v, h), "normal")]
    for i in range(cfg["num_hidden_layers"]):
        specs += _layer_specs(cfg, i)
    specs.append(TensorSpec("model.norm.weight", (h,), "ones"))
    if not cfg["tie_word_embeddings"]:
        specs.append(TensorSpec("lm_head.weight", (v, h), "normal"))
    return specs


def _make_tensor(spec: TensorSpec, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    import torch

    # norms near one and small biases, both random, so that a loader which drops a bias or
    # misplaces a norm weight changes the logits and parity tests catch it
    if spec.init == "ones":
        return (1.0 + 0.1 * torch.randn(spec.shape, generator=gen)).to(dtype)
    if spec.init == "zeros":
        return (INIT_STD * torch.randn(spec.shape, generator=gen)).to(dtype)
    # "fan_in": std 1 / sqrt(fan in), for the layers whose input must survive (the audio
    # encoder's convolutions: at 0.02 a clip's features would vanish under the positions)
    std = (1.0 / math.sqrt(math.prod(spec.shape[1:])) if spec.init == "fan_in" else INIT_STD)
    t = torch.empty(spec.shape, dtype=dtype)
    flat = t.view(-1)
    for start in range(0, flat.numel(), CHUNK_ELEMENTS):
        flat[start : start + CHUNK_ELEMENTS].normal_(0.0, std, generator=gen)
    return t


def _write_header(f: BinaryIO, specs: list[TensorSpec], dtype: torch.dtype) -> None:
    itemsize = dtype.itemsize
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for s in specs:
        n = itemsize
        for d in s.shape:
            n *= d
        header[s.name] = {"dtype": SAFETENSORS_DTYPES[str(dtype).removeprefix("torch.")],
                          "shape": list(s.shape),
                          "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # tensor data starts 8-byte aligned
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)


def _iter_tensors(
    cfg: dict[str, Any], dtype: torch.dtype, seed: int, demo: bool = False
) -> Iterator[tuple[TensorSpec, torch.Tensor]]:
    import torch

    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    for spec in tensor_specs(cfg):
        t = _make_tensor(spec, dtype, gen)
        yield spec, demo_weights.adjust(spec.name, t, cfg, seed) if demo else t


def write_weights(cfg: dict[str, Any], path: Path, seed: int, dtype: torch.dtype,
                  progress: Callable[[int, int], None] | None = None, demo: bool = False) -> None:
    """Stream random weights into a safetensors file; one tensor in memory at a time;
    ``progress(layers_done, layers)`` after each layer; ``demo`` writes in the circuit that
    ends answers (``demo_weights``)."""
    import torch

    specs = tensor_specs(cfg)
    level = logging.INFO if param_count(cfg) > 100_000_000 else logging.DEBUG
    layers = (flat_text(cfg)["num_hidden_layers"] if is_vl(cfg)
              else make_audio.flat_text(cfg)["num_hidden_layers"] if make_audio.is_audio(cfg)
              else cfg["num_hidden_layers"])
    done_layer = -1
    with open(path, "wb") as f:
        _write_header(f, specs, dtype)
        for spec, t in _iter_tensors(cfg, dtype, seed, demo):
            f.write(t.contiguous().view(-1).view(torch.uint8).numpy().data)
            if spec.name.startswith("model.layers."):
                layer = int(spec.name.split(".")[2])
                if layer != done_layer and layer > 0:
                    log.log(level, "layer %d/%d written", layer, layers)
                    if progress is not None:
                        progress(layer, layers)
                done_layer = layer
    log.log(level, "layer %d/%d written", layers, layers)
    if progress is not None:
        progress(layers, layers)


def make_model(preset: str, out_dir: Path, seed: int = 0, dtype: str | None = None, *,
               demo_max_new_tokens: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a Hugging Face checkpoint directory for ``preset`` into ``out_dir``; returns it.

    ``demo_max_new_tokens`` makes it a demo checkpoint: weights whose answers end on their
    own (``demo_weights``), and requests that set no max_tokens get that many output tokens
    at most.
    """
    import torch

    started = time.monotonic()
    cfg = preset_config(preset, dtype)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = (vl_generation_config(cfg) if is_vl(cfg)
           else make_audio.generation_config(cfg) if make_audio.is_audio(cfg)
           else generation_config(cfg))
    if demo_max_new_tokens is not None:
        gen[DEMO_MAX_TOKENS_KEY] = demo_max_new_tokens
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    # vision demos rely on the output cap alone (the circuit is written for text checkpoints)
    demo = (demo_max_new_tokens is not None and not is_vl(cfg) and not make_audio.is_audio(cfg)
            and demo_weights.applies(cfg))
    write_weights(cfg, out_dir / "model.safetensors", seed, getattr(torch, cfg["torch_dtype"]),
                  progress, demo)
    from dashserve.tokenizer_build import write_tokenizer_files

    write_tokenizer_files(out_dir)
    if is_vl(cfg):
        write_vl_files(cfg, out_dir)
    if make_audio.is_audio(cfg):
        make_audio.write_audio_files(out_dir, cfg)
    log.info("made %s (%s, seed %d, %.1fM params) in %s in %.1fs", preset, cfg["torch_dtype"], seed,
             param_count(cfg) / 1e6, out_dir, time.monotonic() - started)
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), help="model shape to write")
    parser.add_argument("--out", type=Path, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"),
                        help="weight dtype (default: the preset's)")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, cfg in PRESETS.items():
            # vision presets: the language model's size (counting the ViT needs torch)
            size = (f"{param_count(flat_text(cfg)) / 1e6:6.1f}M+ViT" if is_vl(cfg)
                    else f"{param_count(make_audio.flat_text(cfg)) / 1e6:6.1f}M+enc"
                    if make_audio.is_audio(cfg)
                    else f"{param_count(cfg) / 1e6:8.1f}M")
            line = f"{name:<20} {cfg['torch_dtype']:<9} {size}  {DESCRIPTIONS.get(name, '')}"
            print(line)  # noqa: T201
        return 0
    if not args.preset or not args.out:
        msg = "dashserve make-model: --preset and --out are required (or --list)"
        print(msg, file=sys.stderr)  # noqa: T201
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = make_model(args.preset, args.out, seed=args.seed, dtype=args.dtype)
    print(out)  # noqa: T201
    return 0
