"""Paged attention over a flat batch of tokens: decode rows batched, prefill chunks per sequence.

A step's tokens are laid out decode-first::

    tokens:  [ d0 d1 ... d(B-1) | p0 p0 p0 ... | p1 p1 ... ]
               one token per      a chunk of     next chunk
               decoding seq       seq p0         ...

Each layer writes the new K/V rows into its cache at ``slot_mapping`` (slot = block * block_size
+ offset), then reads each sequence's whole context back through the slots listed for it.
Caches are laid out head-major, ``[num_kv_heads, num_slots, head_dim]``, so one gather yields
``[KVH, B, L, D]``, which batched matmuls consume without a further copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(slots=True)
class PrefillSegment:
    """One sequence's prompt chunk in this step."""

    token_start: int  # index of its first token in the flat batch
    num_tokens: int  # tokens computed this step
    context_slots: torch.Tensor  # [ctx_len] cache slots of the whole context, chunk included


@dataclass(slots=True)
class AttentionMetadata:
    """Everything attention needs for one step, built once per step by the runner."""

    slot_mapping: torch.Tensor  # [T] where each new token's K/V is written
    num_decode: int  # the first num_decode tokens are single-token decodes
    decode_slots: torch.Tensor | None  # [B, L] context slots per decoding seq (padded with 0)
    decode_mask: torch.Tensor | None  # [1, B, 1, L] additive mask: 0 valid, -inf padding
    prefills: list[PrefillSegment]
    decode_lens: torch.Tensor | None = None  # [B] context length per decoding seq
    # native kernel (q, k_cache, v_cache, slots, lens, scale) -> out, reading the cache in place
    decode_kernel: Callable[..., torch.Tensor] | None = None


def paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor,
    meta: AttentionMetadata, scale: float,
) -> torch.Tensor:
    """q: [T, H, D]; k, v: [T, KVH, D]; caches: [KVH, num_slots, D]. Returns [T, H, D]."""
    k_cache.index_copy_(1, meta.slot_mapping, k.transpose(0, 1))
    v_cache.index_copy_(1, meta.slot_mapping, v.transpose(0, 1))
    out = torch.empty_like(q)
    if meta.num_decode and meta.decode_kernel is not None:
        out[: meta.num_decode] = meta.decode_kernel(
            q[: meta.num_decode].contiguous(), k_cache, v_cache, meta.decode_slots,
            meta.decode_lens, scale,
        )
    elif meta.num_decode:
        out[: meta.num_decode] = _decode(q[: meta.num_decode], k_cache, v_cache, meta, scale)
    for seg in meta.prefills:
        end = seg.token_start + seg.num_tokens
        out[seg.token_start:end] = _prefill(q[seg.token_start:end], k_cache, v_cache, seg, scale)
    return out


def _decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    meta: AttentionMetadata, scale: float,
) -> torch.Tensor:
    assert meta.decode_slots is not None and meta.decode_mask is not None
    b, h, d = q.shape
    kvh = k_cache.shape[0]
    group = h // kvh
    keys = k_cache[:, meta.decode_slots]  # [KVH, B, L, D]
    values = v_cache[:, meta.decode_slots]
    qg = q.view(b, kvh, group, d).transpose(0, 1)  # [KVH, B, G, D]
    scores = torch.matmul(qg, keys.transpose(-1, -2)).float() * scale + meta.decode_mask
    probs = torch.softmax(scores, dim=-1).to(values.dtype)  # [KVH, B, G, L]
    return torch.matmul(probs, values).transpose(0, 1).reshape(b, h, d)


def _prefill(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    seg: PrefillSegment, scale: float,
) -> torch.Tensor:
    n, h, d = q.shape
    ctx = seg.context_slots.shape[0]
    keys = k_cache[:, seg.context_slots].unsqueeze(0)  # [1, KVH, ctx, D]
    values = v_cache[:, seg.context_slots].unsqueeze(0)
    qh = q.transpose(0, 1).unsqueeze(0)  # [1, H, n, D]
    if ctx == n:
        out = F.scaled_dot_product_attention(
            qh, keys, values, is_causal=True, scale=scale, enable_gqa=True
        )
    else:
        # query i (absolute position ctx - n + i) sees keys 0..ctx-n+i
        q_pos = torch.arange(ctx - n, ctx, device=q.device).unsqueeze(1)
        mask = torch.arange(ctx, device=q.device).unsqueeze(0) <= q_pos
        out = F.scaled_dot_product_attention(
            qh, keys, values, attn_mask=mask, scale=scale, enable_gqa=True
        )
    return out.squeeze(0).transpose(0, 1)
