"""Random weights that still end their answers: the demo checkpoint's end-of-turn circuit.

Random weights almost never pick ``<|im_end|>``, so a demo model's answers would run to their
length limit. The demo checkpoint gets one small, deterministic circuit on top of its random
weights, so that ``<|im_end|>`` becomes likely right after an "ending" token (a fixed random
5% of the ordinary vocabulary, chosen by the seed) and stays unlikely elsewhere: sampled
answers end within a few dozen tokens, at a point that depends on the sampled text (greedy
decoding may loop without meeting an ender; the demo's default output length ends those):

- embedding coordinate ``MARK`` carries +/- ``MARK_SCALE`` by whether the token is an ender;
  the final norm zeroes that coordinate, so the (tied) output layer never sees it;
- one neuron of the last MLP reads ``MARK`` (``silu(x) * x``: large for enders, near zero
  otherwise) and writes coordinate ``SIGNAL``;
- the ``<|im_end|>`` output row reads ``SIGNAL``.

Everything else stays random-looking; the same preset and seed give the same bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dashserve.model.presets import is_moe_layer

if TYPE_CHECKING:
    import torch

END_TOKEN = 151645  # <|im_end|>
MARK, SIGNAL, NEURON = 0, 1, 0
MARK_SCALE = 20.0
ENDER_SHARE = 0.05
END_WEIGHT = 1.0
FIRST_ORDINARY, FIRST_SPECIAL = 1000, 151643  # enders avoid common pieces such as "\n"


def enders(cfg: dict[str, Any], seed: int) -> torch.Tensor:
    """Which token ids end an answer (bool mask over the vocabulary)."""
    import torch

    gen = torch.Generator().manual_seed(seed + 7919)
    mask = torch.rand(cfg["vocab_size"], generator=gen) < ENDER_SHARE
    mask[:FIRST_ORDINARY] = False
    mask[FIRST_SPECIAL:] = False
    return mask


def applies(cfg: dict[str, Any]) -> bool:
    """Dense last layer and a vocabulary that holds ``<|im_end|>``."""
    return cfg["vocab_size"] > END_TOKEN and not is_moe_layer(cfg, cfg["num_hidden_layers"] - 1)


def adjust(name: str, tensor: torch.Tensor, cfg: dict[str, Any], seed: int) -> torch.Tensor:
    """``tensor`` (checkpoint name ``name``) with the circuit written in; others unchanged."""
    last = f"model.layers.{cfg['num_hidden_layers'] - 1}.mlp."
    t = tensor
    if name == "model.embed_tokens.weight":
        mask = enders(cfg, seed)
        t[:, MARK] = -MARK_SCALE
        t[mask, MARK] = MARK_SCALE
        t[END_TOKEN, MARK] = 0.0
        if cfg["tie_word_embeddings"]:
            t[END_TOKEN, SIGNAL] = END_WEIGHT
    elif name == "lm_head.weight":
        t[END_TOKEN, SIGNAL] = END_WEIGHT
    elif name in (last + "gate_proj.weight", last + "up_proj.weight"):
        t[NEURON] = 0.0
        t[NEURON, MARK] = 1.0
    elif name == last + "down_proj.weight":
        t[:, NEURON] = 0.0
        t[SIGNAL, NEURON] = 1.0
    elif name == "model.norm.weight":
        t[MARK] = 0.0
    return t
