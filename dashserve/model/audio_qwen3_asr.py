"""Qwen3-ASR's audio encoder and projector, with module names mirroring the Hugging Face
checkpoints (``audio_tower.*``, ``multi_modal_projector.*``).

The log-mel frames of one clip are cut into chunks of ``2 * n_window`` frames (one second);
each chunk goes through three stride-2 convolutions on its own (13 tokens per full chunk) and
gets the same sinusoid positions; the transformer then attends within windows of
``n_window_infer`` frames' worth of tokens, never across clips."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dashserve.contracts.audio_tokens import post_cnn_length
from dashserve.model.audio_config import AudioConfig


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """[length, channels]: sin over the first half of the channels, cos over the second."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2).float())
    scaled = torch.arange(length)[:, None].float() * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def _activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unsupported audio activation {name!r}")


class AudioAttention(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.num_heads = cfg.num_heads
        self.head_dim = d // cfg.num_heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, windows: list[int]) -> torch.Tensor:
        t = x.shape[0]
        q = self.q_proj(x).view(t, self.num_heads, self.head_dim).transpose(0, 1)
        k = self.k_proj(x).view(t, self.num_heads, self.head_dim).transpose(0, 1)
        v = self.v_proj(x).view(t, self.num_heads, self.head_dim).transpose(0, 1)
        outs = [F.scaled_dot_product_attention(qw, kw, vw)
                for qw, kw, vw in zip(q.split(windows, 1), k.split(windows, 1),
                                      v.split(windows, 1), strict=True)]
        out = torch.cat(outs, dim=1).transpose(0, 1).reshape(t, -1)
        result: torch.Tensor = self.out_proj(out)
        return result


class AudioEncoderLayer(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = AudioAttention(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = _activation(cfg.activation)

    def forward(self, x: torch.Tensor, windows: list[int]) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), windows)
        result: torch.Tensor = x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))
        return result


class Qwen3ASRAudioEncoder(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = cfg.downsample_hidden_size
        self.conv2d1 = nn.Conv2d(1, hidden, 3, 2, padding=1)
        self.conv2d2 = nn.Conv2d(hidden, hidden, 3, 2, padding=1)
        self.conv2d3 = nn.Conv2d(hidden, hidden, 3, 2, padding=1)
        freq = (((cfg.num_mel_bins + 1) // 2 + 1) // 2 + 1) // 2
        self.conv_out = nn.Linear(hidden * freq, cfg.d_model, bias=False)
        self.layers = nn.ModuleList(AudioEncoderLayer(cfg) for _ in range(cfg.num_layers))
        self.ln_post = nn.LayerNorm(cfg.d_model)
        self.register_buffer("positional_embedding",
                             sinusoids(cfg.max_positions, cfg.d_model), persistent=False)

    def reset_positions(self, device: torch.device) -> None:
        """Recompute the sinusoid table (after building on the meta device)."""
        table = sinusoids(self.cfg.max_positions, self.cfg.d_model)
        self.positional_embedding = table.to(device)

    def forward(self, features: list[torch.Tensor], frames: list[int]) -> torch.Tensor:
        """Encoder rows of clips packed one after another; clip ``i`` is ``features[i]``
        ([num_mel_bins, >= frames[i]] padded to whole chunks) of which ``frames[i]`` are
        real."""
        chunk = self.cfg.chunk_frames
        chunks: list[torch.Tensor] = []
        lengths: list[int] = []
        windows: list[int] = []
        per_chunk = post_cnn_length(chunk)
        window = per_chunk * (self.cfg.n_window_infer // chunk)
        for feats, n in zip(features, frames, strict=True):
            num = -(-n // chunk)
            chunks.append(feats[:, :num * chunk].reshape(feats.shape[0], num, chunk)
                          .permute(1, 0, 2))
            lens = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
            lengths.extend(post_cnn_length(c) for c in lens)
            tokens = sum(post_cnn_length(c) for c in lens)
            windows.extend([window] * (tokens // window) + ([tokens % window] if tokens % window
                                                            else []))
        x = torch.cat(chunks).unsqueeze(1)  # [chunks, 1, mel, chunk]
        x = F.gelu(self.conv2d1(x))
        x = F.gelu(self.conv2d2(x))
        x = F.gelu(self.conv2d3(x))
        n_chunks, channels, freq, steps = x.shape
        x = self.conv_out(x.permute(0, 3, 1, 2).reshape(n_chunks, steps, channels * freq))
        x = x + self.positional_embedding[:steps].to(x.dtype)
        keep = torch.arange(steps, device=x.device) < torch.tensor(lengths, device=x.device)[:, None]
        h = x[keep]  # valid positions of every chunk, in order
        for layer in self.layers:
            h = layer(h, windows)
        result: torch.Tensor = self.ln_post(h)
        return result


class AudioProjector(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = _activation(cfg.activation)
        self.linear_2 = nn.Linear(cfg.d_model, cfg.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.linear_2(self.act(self.linear_1(x)))
        return result
