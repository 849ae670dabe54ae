"""``make-model`` for the Qwen VL presets: the decoder's tensors as for the text presets, the
vision encoder's named as in the module tree, and the files only VL checkpoints carry
(``preprocessor_config.json``, the VL chat template)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from dashserve.model.presets_vl import PREPROCESSORS
from dashserve.model.vision_config import VisionConfig, text_config_dict

TEXT_MODEL_TYPES = {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}
TEMPLATES = {"qwen2_5_vl": "qwen2_5_vl.jinja", "qwen3_vl": "qwen3_vl.jinja"}
NORM_SUFFIXES = ("norm.weight", "norm1.weight", "norm2.weight", "ln_q.weight")


def is_vl(cfg: dict[str, Any]) -> bool:
    return "vision_config" in cfg


def flat_text(cfg: dict[str, Any]) -> dict[str, Any]:
    """The decoder's config as a text preset of the same shape (for its tensor names)."""
    arch = cfg["architectures"][0]
    text = text_config_dict(cfg, arch)
    text["model_type"] = TEXT_MODEL_TYPES[text["architectures"][0]]
    return text


def published_name(cfg: dict[str, Any], name: str) -> str:
    """Qwen3-VL checkpoints are published in transformers 5's layout (``model.language_model.*``,
    ``model.visual.*``), Qwen2.5-VL ones in the older one (``model.*``, ``visual.*``)."""
    if cfg["model_type"] != "qwen3_vl" or name.startswith("lm_head."):
        return name
    if name.startswith("visual."):
        return "model." + name
    return "model.language_model." + name[len("model."):]


def vision_specs(cfg: dict[str, Any]) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) of every ``visual.*`` tensor, in module order."""
    import torch

    from dashserve.model.vision_qwen3 import Qwen3VisionTransformer
    from dashserve.model.vision_qwen25 import Qwen25VisionTransformer

    vision = VisionConfig.from_dict(cfg, cfg["architectures"][0])
    cls = Qwen3VisionTransformer if vision.family == "qwen3-vl" else Qwen25VisionTransformer
    with torch.device("meta"):
        encoder = cls(vision)
    specs = []
    for name, param in encoder.named_parameters():
        init = ("ones" if name.endswith(NORM_SUFFIXES)
                else "zeros" if name.endswith(".bias") else "normal")
        specs.append((f"visual.{name}", tuple(param.shape), init))
    return specs


def generation_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """generation_config.json as the Qwen2.5-VL / Qwen3-VL instruct checkpoints ship it."""
    gen: dict[str, Any] = {
        "bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
        "pad_token_id": 151643,
    }
    if cfg["model_type"] == "qwen2_5_vl":
        gen.update(repetition_penalty=1.05, temperature=1e-06, top_k=1, top_p=0.001)
    else:
        gen.update(temperature=0.7, top_k=20, top_p=0.8)
    gen["transformers_version"] = cfg.get("transformers_version", "4.51.0")
    return gen


def chat_template(cfg: dict[str, Any]) -> str:
    path = resources.files("dashserve.model") / "templates" / TEMPLATES[cfg["model_type"]]
    return path.read_text("utf-8").rstrip("\n")


def write_vl_files(cfg: dict[str, Any], out_dir: Path) -> None:
    """The preprocessor config and the VL chat template (in ``tokenizer_config.json`` too)."""
    pre = PREPROCESSORS[cfg["model_type"]]
    (out_dir / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    template = chat_template(cfg)
    (out_dir / "chat_template.jinja").write_text(template + "\n", encoding="utf-8")
    tok_path = out_dir / "tokenizer_config.json"
    tok = json.loads(tok_path.read_text("utf-8"))
    tok["chat_template"] = template
    tok_path.write_text(json.dumps(tok, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
