"""Decode-time bf16 layers on CPU: the native kernels and the packed oneDNN path equal torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dashserve.model.cpu_kernels import decode_ops_module
from dashserve.model.cpu_linear import (
    WIDEN_ROWS,
    NativeLinear,
    PackedLinear,
    onednn_bf16,
    pack_linears,
    use_native_ops,
)
from dashserve.model.layers import RMSNorm

NEEDS_NATIVE = pytest.mark.skipif(decode_ops_module() is None,
                                  reason="no AVX512-BF16/AVX2 or no compiler on this machine")
NEEDS_ONEDNN_BF16 = pytest.mark.skipif(not onednn_bf16(), reason="no oneDNN bf16 on this CPU")


def reference(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    bias = None if linear.bias is None else linear.bias.float()
    return F.linear(x.float(), linear.weight.float(), bias)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 9, 16, 17, 37, WIDEN_ROWS + 3])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_layers_match_torch_for_every_batch_size(rows: int, bias: bool) -> None:
    torch.manual_seed(rows)
    linear = nn.Linear(256, 160, bias=bias).to(torch.bfloat16)
    model = nn.Sequential(linear)
    ref_layer = nn.Linear(256, 160, bias=bias).to(torch.bfloat16)
    ref_layer.load_state_dict(linear.state_dict())
    assert pack_linears(model) == 1
    x = torch.randn(rows, 256, dtype=torch.bfloat16)
    got = model(x).float()
    want = reference(x, ref_layer)
    assert got.shape == (rows, 160)
    # bf16 output rounding only: relative error of the largest value well under 1%
    assert (got - want).abs().max() <= 0.01 * want.abs().max()


@NEEDS_ONEDNN_BF16
def test_oneDNN_packed_layer_matches_torch() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(128, 64).to(torch.bfloat16)
    packed = PackedLinear(linear, batch_hint=1)
    x = torch.randn(3, 128, dtype=torch.bfloat16)
    want = reference(x, linear)
    assert (packed(x).float() - want).abs().max() <= 0.01 * want.abs().max()


@NEEDS_NATIVE
def test_native_rms_norm_is_bit_identical_to_the_float32_reference() -> None:
    torch.manual_seed(0)
    norm = RMSNorm(128, 1e-6)
    norm.weight.data = torch.randn(128)
    norm.to(torch.bfloat16)
    x = torch.randn(2, 5, 128, dtype=torch.bfloat16)
    want = norm(x)
    assert use_native_ops(nn.Sequential(norm)) == 1
    got = norm(x)
    assert got.shape == x.shape and torch.equal(got, want)


@NEEDS_NATIVE
def test_native_linear_refuses_shapes_it_cannot_do() -> None:
    kernels = decode_ops_module()
    w = torch.randn(64, 44, dtype=torch.bfloat16)  # K not a multiple of 8 (nor of 32)
    with pytest.raises(RuntimeError):
        kernels.linear(torch.randn(1, 44, dtype=torch.bfloat16), w, None)
    w = torch.randn(64, 64, dtype=torch.bfloat16)
    too_many = torch.randn(kernels.max_rows() + 1, 64, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError):
        kernels.linear(too_many, w, None)


def test_a_layer_the_kernel_cannot_take_still_computes_right() -> None:
    """K = 44 fits no native kernel: the layer falls back (oneDNN bf16 or widened float32)."""
    torch.manual_seed(1)
    linear = nn.Linear(44, 24, bias=True).to(torch.bfloat16)
    model = nn.Sequential(linear)
    assert pack_linears(model) == 1
    x = torch.randn(5, 44, dtype=torch.bfloat16)
    want = reference(x, linear)
    got = model(x).float()
    assert (got - want).abs().max() <= 0.01 * want.abs().max()


@NEEDS_NATIVE
def test_without_onednn_bf16_the_native_layer_serves_any_batch_size() -> None:
    """The AVX2 path: no bf16 BLAS to fall back on, so chunks and widening must be exact."""
    torch.manual_seed(2)
    linear = nn.Linear(64, 40, bias=True).to(torch.bfloat16)
    layer = NativeLinear(linear, decode_ops_module(), onednn=False)
    for rows in (1, decode_ops_module().max_rows() + 1, WIDEN_ROWS + 1):
        x = torch.randn(rows, 64, dtype=torch.bfloat16)
        want = reference(x, linear)
        got = layer(x).float()
        assert got.shape == (rows, 40)
        assert (got - want).abs().max() <= 0.01 * want.abs().max()


@NEEDS_NATIVE
@pytest.mark.parametrize("qk_norm", [True, False])
def test_fused_qk_norm_and_rotary_equal_the_torch_ops(qk_norm: bool) -> None:
    from dashserve.model.layers import RotaryEmbedding

    torch.manual_seed(3)
    d, heads, kv_heads = 64, 4, 2
    rotary = RotaryEmbedding(d, 256, 1e6)
    positions = torch.tensor([0, 7, 8, 100, 255])
    q = torch.randn(5, heads, d, dtype=torch.bfloat16)
    k = torch.randn(5, kv_heads, d, dtype=torch.bfloat16)
    norms = []
    for _ in range(2):
        norm = RMSNorm(d, 1e-6)
        norm.weight.data = torch.randn(d)
        norms.append(norm.to(torch.bfloat16))
    want_q, want_k = (norms[0](q), norms[1](k)) if qk_norm else (q, k)
    want_q, want_k = rotary(positions, want_q, want_k)
    got_q, got_k = q.clone(), k.clone()
    weights = (norms[0].weight, norms[1].weight) if qk_norm else (None, None)
    decode_ops_module().qk_norm_rope(got_q, got_k, *weights, rotary.cos, rotary.sin, positions, 1e-6)
    assert torch.equal(got_q, want_q) and torch.equal(got_k, want_k)
    with pytest.raises(RuntimeError, match="position"):
        decode_ops_module().qk_norm_rope(got_q, got_k, *weights, rotary.cos, rotary.sin,
                                         torch.tensor([0, 1, 2, 3, 256]), 1e-6)
