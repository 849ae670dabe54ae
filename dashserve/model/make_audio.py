"""``make-model`` for the speech presets (Qwen3-ASR, Qwen2-Audio): the decoder's tensors as
for the text presets, the audio encoder's and projector's named as in the module tree,
transformers' layout (``model.language_model.*``, ``model.audio_tower.*``,
``model.multi_modal_projector.*``), and the tokenizer with the family's audio tokens at their
published ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dashserve.model.audio_config import (
    ASR_TEXT_TOKEN_ID,
    AUDIO_ARCHITECTURES,
    AUDIO_END_TOKEN_ID,
    AUDIO_PAD_TOKEN_ID,
    AUDIO_START_TOKEN_ID,
    QWEN2_AUDIO_BOS_TOKEN_ID,
    QWEN2_AUDIO_EOS_TOKEN_ID,
    QWEN2_AUDIO_TOKEN_ID,
    AudioConfig,
    audio_text_config,
)
from dashserve.model.presets_audio import FEATURE_EXTRACTOR, QWEN2_AUDIO_FEATURE_EXTRACTOR

# (id, content, special) as Qwen3-ASR's tokenizer_config.json lists them
_PUBLISHED: dict[int, tuple[str, bool]] = {
    AUDIO_START_TOKEN_ID: ("<|audio_start|>", True),
    AUDIO_END_TOKEN_ID: ("<|audio_end|>", True),
    AUDIO_PAD_TOKEN_ID: ("<|audio_pad|>", True),
    ASR_TEXT_TOKEN_ID: ("<asr_text>", False),
}
# The tokenizer numbers added tokens consecutively, so the ids between the published ones
# (151671-151675, 151677-151703; no published table of them was at hand) hold reserved
# special tokens that no text produces.
AUDIO_ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = tuple(
    (i, *_PUBLISHED.get(i, (f"<|reserved_{i}|>", True)))
    for i in range(AUDIO_START_TOKEN_ID, ASR_TEXT_TOKEN_ID + 1)
)
# Qwen2-Audio's tokenizer gives the ids Qwen3's table holds <|object_ref_start|>,
# <|object_ref_end|> and <|box_start|> to its audio tokens (see audio_config): they replace
# those entries, and Qwen2-Audio's processor chat template goes with them
QWEN2_AUDIO_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (QWEN2_AUDIO_TOKEN_ID, "<|AUDIO|>", True),
    (QWEN2_AUDIO_BOS_TOKEN_ID, "<|audio_bos|>", True),
    (QWEN2_AUDIO_EOS_TOKEN_ID, "<|audio_eos|>", True),
)
# the chat template Qwen2-Audio's processor applies (an audio part is "Audio N: " and the
# clip between <|audio_bos|> and <|audio_eos|>; a default system turn)
QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content or content['type'] == 'audio' %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
NORM_SUFFIXES = ("layer_norm.weight", "ln_post.weight")


def is_audio(cfg: dict[str, Any]) -> bool:
    return "audio_config" in cfg


def family(cfg: dict[str, Any]) -> str:
    return AUDIO_ARCHITECTURES[cfg["architectures"][0]]


def flat_text(cfg: dict[str, Any]) -> dict[str, Any]:
    """The decoder's config as a text preset of the same shape (for its tensor names)."""
    text = audio_text_config(cfg, cfg["architectures"][0])
    text["model_type"] = "qwen2" if family(cfg) == "qwen2-audio" else "qwen3"
    return text


def published_name(name: str) -> str:
    if name.startswith("lm_head."):
        return name
    if name.startswith(("audio_tower.", "multi_modal_projector.")):
        return "model." + name
    return "model.language_model." + name[len("model."):]


def audio_specs(cfg: dict[str, Any]) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) of every audio encoder and projector tensor, in module order."""
    import torch

    from dashserve.model.audio_qwen2 import Qwen2AudioEncoder, Qwen2AudioProjector
    from dashserve.model.audio_qwen3_asr import AudioProjector, Qwen3ASRAudioEncoder

    audio = AudioConfig.from_dict(cfg, cfg["architectures"][0])
    specs = []
    with torch.device("meta"):
        modules: tuple[tuple[str, torch.nn.Module], ...] = (
            (("audio_tower", Qwen2AudioEncoder(audio)),
             ("multi_modal_projector", Qwen2AudioProjector(audio)))
            if audio.family == "qwen2-audio" else
            (("audio_tower", Qwen3ASRAudioEncoder(audio)),
             ("multi_modal_projector", AudioProjector(audio))))
    for prefix, module in modules:
        for name, param in module.named_parameters():
            init = ("ones" if name.endswith(NORM_SUFFIXES)
                    else "zeros" if name.endswith(".bias")
                    else "fan_in" if name.startswith(("conv", "linear")) else "normal")
            specs.append((f"{prefix}.{name}", tuple(param.shape), init))
    return specs


def generation_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Greedy decoding, as the speech recognition checkpoints ship it; Qwen2-Audio-Instruct's
    sampling settings."""
    if family(cfg) == "qwen2-audio":
        return {"bos_token_id": 151643, "do_sample": True, "eos_token_id": [151643, 151645],
                "pad_token_id": 151643, "repetition_penalty": 1.1, "temperature": 0.7,
                "top_k": 20, "top_p": 0.5,
                "transformers_version": cfg.get("transformers_version", "5.25.0")}
    return {"do_sample": False, "eos_token_id": [151643, 151645], "pad_token_id": 151643,
            "transformers_version": cfg.get("transformers_version", "5.25.0")}


def write_audio_files(out_dir: Path, cfg: dict[str, Any] | None = None) -> None:
    """The feature extractor's config, and the audio tokens added to the tokenizer files."""
    if cfg is not None and family(cfg) == "qwen2-audio":
        _write_qwen2_audio_files(out_dir)
        return
    (out_dir / "preprocessor_config.json").write_text(
        json.dumps(FEATURE_EXTRACTOR, indent=2) + "\n")
    tok_path = out_dir / "tokenizer.json"
    tok = json.loads(tok_path.read_text("utf-8"))
    for id_, content, special in AUDIO_ADDED_TOKENS:
        tok["added_tokens"].append({
            "id": id_, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": special})
    tok_path.write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    cfg_path = out_dir / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text("utf-8"))
    for id_, content, special in AUDIO_ADDED_TOKENS:
        tcfg["added_tokens_decoder"][str(id_)] = {
            "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special}
    tcfg["additional_special_tokens"] += [c for _, c, s in AUDIO_ADDED_TOKENS if s]
    cfg_path.write_text(json.dumps(tcfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_qwen2_audio_files(out_dir: Path) -> None:
    """Whisper's feature extractor config; the audio tokens in place of the Qwen3 entries at
    their ids; the processor's chat template."""
    (out_dir / "preprocessor_config.json").write_text(
        json.dumps(QWEN2_AUDIO_FEATURE_EXTRACTOR, indent=2) + "\n")
    tokens = {id_: (content, special) for id_, content, special in QWEN2_AUDIO_TOKENS}
    tok_path = out_dir / "tokenizer.json"
    tok = json.loads(tok_path.read_text("utf-8"))
    replaced = []
    for entry in tok["added_tokens"]:
        if entry["id"] in tokens:
            replaced.append(entry["content"])
            entry["content"], entry["special"] = tokens[entry["id"]]
    tok_path.write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    cfg_path = out_dir / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text("utf-8"))
    for id_, (content, special) in tokens.items():
        tcfg["added_tokens_decoder"][str(id_)].update(content=content, special=special)
    tcfg["additional_special_tokens"] = [
        c for c in tcfg["additional_special_tokens"] if c not in replaced] + [
        c for c, _ in tokens.values()]
    tcfg["chat_template"] = QWEN2_AUDIO_CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(tcfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
