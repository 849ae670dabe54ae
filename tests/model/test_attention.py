"""Paged attention: the native decode kernel and the torch path agree with dense attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dashserve.model.attention import AttentionMetadata, PrefillSegment, paged_attention
from dashserve.model.cpu_kernels import paged_decode_module

KVH, H, D, BS, NUM_BLOCKS = 2, 4, 16, 4, 32


def _cache(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shape = (KVH, NUM_BLOCKS * BS, D)
    return torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)


def _dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [H, D]; k, v [KVH, L, D] -> [H, D] (one query attending to all keys)."""
    out = F.scaled_dot_product_attention(
        q.float().view(1, H, 1, D), k.float().unsqueeze(0), v.float().unsqueeze(0),
        enable_gqa=True,
    )
    return out.view(H, D)


def _decode_meta(tables: list[list[int]], lens: list[int], kernel) -> AttentionMetadata:
    max_len = max(lens)
    slots = torch.tensor([[t[min(p // BS, len(t) - 1)] * BS + p % BS for p in range(max_len)]
                          for t in tables])
    valid = torch.arange(max_len).unsqueeze(0) < torch.tensor(lens).unsqueeze(1)
    mask = torch.zeros(valid.shape).masked_fill_(~valid, float("-inf")).view(1, len(lens), 1, -1)
    new_slots = torch.tensor([s[n - 1] for s, n in zip(slots.tolist(), lens, strict=True)])
    return AttentionMetadata(new_slots, len(lens), slots, mask, [], torch.tensor(lens), kernel)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("native", [False, True])
def test_decode_matches_dense_attention(dtype: torch.dtype, native: bool) -> None:
    kernel = None
    if native:
        module = paged_decode_module()
        if module is None:
            pytest.skip("no compiler for native kernels")
        kernel = module.paged_decode
    k_cache, v_cache = _cache(dtype)
    tables = [[5, 2, 9], [7, 1], [3, 4, 8, 0]]
    lens = [11, 6, 13]
    q = torch.randn(3, H, D).to(dtype)
    k_new, v_new = torch.randn(3, KVH, D).to(dtype), torch.randn(3, KVH, D).to(dtype)
    meta = _decode_meta(tables, lens, kernel)
    out = paged_attention(q, k_new, v_new, k_cache, v_cache, meta, D**-0.5)
    for i, (table, n) in enumerate(zip(tables, lens, strict=True)):
        slots = torch.tensor([table[p // BS] * BS + p % BS for p in range(n)])
        ref = _dense(q[i], k_cache[:, slots], v_cache[:, slots])
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        assert torch.allclose(out[i].float(), ref, atol=tol), (out[i].float() - ref).abs().max()


def test_prefill_chunk_with_cached_prefix_is_causal() -> None:
    k_cache, v_cache = _cache(torch.float32)
    table = [6, 3, 10]
    ctx, n = 10, 4  # 6 tokens already cached, 4 computed now
    slots = torch.tensor([table[p // BS] * BS + p % BS for p in range(ctx)])
    q = torch.randn(n, H, D)
    k_new, v_new = torch.randn(n, KVH, D), torch.randn(n, KVH, D)
    meta = AttentionMetadata(slots[ctx - n:], 0, None, None, [PrefillSegment(0, n, slots)])
    out = paged_attention(q, k_new, v_new, k_cache, v_cache, meta, D**-0.5)
    for i in range(n):
        visible = slots[: ctx - n + i + 1]
        ref = _dense(q[i], k_cache[:, visible], v_cache[:, visible])
        assert torch.allclose(out[i], ref, atol=1e-5)
