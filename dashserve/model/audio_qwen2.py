"""Qwen2-Audio's audio encoder (Whisper's) and projector, with module names mirroring the
Hugging Face checkpoints (``audio_tower.*``, ``multi_modal_projector.linear``).

A clip's log-mel frames (one window of at most 30 s) go through a convolution and a
stride-2 convolution, get learned positions, and pass a transformer attending over the
clip's real positions only (as the reference masks the padding of its 30 s window); the
rows are then averaged in pairs and normalised: about 25 rows a second."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dashserve.model.audio_config import AudioConfig
from dashserve.model.audio_qwen3_asr import _activation


class Qwen2AudioAttention(nn.Module):
    """Whisper's attention: no bias on the key projection."""

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.num_heads = cfg.num_heads
        self.head_dim = d // cfg.num_heads
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, clips: list[int]) -> torch.Tensor:
        t = x.shape[0]
        q = self.q_proj(x).view(t, self.num_heads, self.head_dim).transpose(0, 1)
        k = self.k_proj(x).view(t, self.num_heads, self.head_dim).transpose(0, 1)
        v = self.v_proj(x).view(t, self.num_heads, self.head_dim).transpose(0, 1)
        outs = [F.scaled_dot_product_attention(qc, kc, vc)
                for qc, kc, vc in zip(q.split(clips, 1), k.split(clips, 1),
                                      v.split(clips, 1), strict=True)]
        out = torch.cat(outs, dim=1).transpose(0, 1).reshape(t, -1)
        result: torch.Tensor = self.out_proj(out)
        return result


class Qwen2AudioEncoderLayer(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = Qwen2AudioAttention(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = _activation(cfg.activation)

    def forward(self, x: torch.Tensor, clips: list[int]) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), clips)
        result: torch.Tensor = x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))
        return result


class Qwen2AudioEncoder(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.conv1 = nn.Conv1d(cfg.num_mel_bins, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(cfg.max_positions, d)
        self.layers = nn.ModuleList(Qwen2AudioEncoderLayer(cfg) for _ in range(cfg.num_layers))
        self.layer_norm = nn.LayerNorm(d)

    def reset_positions(self, device: torch.device) -> None:
        """Nothing to do: the positions are learned, loaded with the weights."""

    def forward(self, features: list[torch.Tensor], frames: list[int]) -> torch.Tensor:
        """Encoder rows of clips packed one after another; clip ``i`` is ``features[i]``
        ([num_mel_bins, >= frames[i]], the frames past the clip being the extractor's
        padding) of which ``frames[i]`` are real."""
        rows: list[torch.Tensor] = []
        lengths: list[int] = []
        for feats, n in zip(features, frames, strict=True):
            # the last real position of the second convolution reads two padding frames
            x = feats[:, :min(n + 2, feats.shape[1])].unsqueeze(0)
            x = F.gelu(self.conv1(x))
            x = F.gelu(self.conv2(x))[0].transpose(0, 1)
            steps = (n - 1) // 2 + 1
            rows.append(x[:steps] + self.embed_positions.weight[:steps])
            lengths.append(steps)
        h = torch.cat(rows)
        for layer in self.layers:
            h = layer(h, lengths)
        pooled = [clip[:steps // 2 * 2].view(steps // 2, 2, -1).mean(1)
                  for clip, steps in zip(torch.split(h, lengths), lengths, strict=True)]
        result: torch.Tensor = self.layer_norm(torch.cat(pooled))
        return result


class Qwen2AudioProjector(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(cfg.d_model, cfg.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.linear(x)
        return result
