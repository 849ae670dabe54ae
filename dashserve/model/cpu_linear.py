"""Faster bf16 linear layers on CPU for decode, where a step reads every weight once.

Two ways, picked once per model: on CPUs with AVX512-BF16, our native kernel streams each
weight row once for one or two input rows (decode of one or two sequences: about 1.4x oneDNN's
rate there) and oneDNN, which uses AMX where the CPU has it, takes larger batches from the same
row-major weight; elsewhere the weights are reordered once into oneDNN's
blocked layout, which its small-batch kernels read faster than a row-major one. Results match
``F.linear`` to bf16 rounding.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from dashserve.model.cpu_kernels import decode_ops_module

log = logging.getLogger(__name__)

# Rows up to which the native kernel beats oneDNN (measured: 1.4x at 1 row, 1.1x at 2, even
# at 4, slower beyond).
NATIVE_ROWS = 2


def packing_available(dtype: torch.dtype, device: torch.device) -> bool:
    return (
        device.type == "cpu" and dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class PackedLinear(nn.Module):
    """A bf16 linear layer whose weight lives in oneDNN's packed layout."""

    def __init__(self, linear: nn.Linear, batch_hint: int) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach()
        self.register_buffer(
            "packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint)
        )
        bias = linear.bias.detach() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.ops.mkldnn._linear_pointwise(
            x.reshape(-1, self.in_features), self.packed_weight, self.bias, "none", [], ""
        )
        return out.view(*shape[:-1], self.out_features)


class NativeLinear(nn.Module):
    """A bf16 linear layer: our kernel for up to ``NATIVE_ROWS`` input rows, oneDNN beyond."""

    def __init__(self, linear: nn.Linear, kernels: object) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight  # shared, not copied: a tied lm_head stays tied
        self.bias = linear.bias
        self._kernels = kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] > NATIVE_ROWS:
            return F.linear(x, self.weight, self.bias)
        out = self._kernels.linear(flat, self.weight, self.bias)  # type: ignore[attr-defined]
        return out.view(*shape[:-1], self.out_features)


def pack_linears(model: nn.Module, batch_hint: int = 1) -> int:
    """Replace every bf16 nn.Linear in ``model`` by the faster decode layer; returns how many.

    With the native kernel weights stay as they are; with oneDNN packing a tied lm_head keeps
    the embedding's weight for lookups and gets its own packed copy.
    """
    kernels = decode_ops_module()
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child.weight.dtype == torch.bfloat16:
                native = kernels is not None and child.in_features % 32 == 0
                setattr(module, child_name,
                        NativeLinear(child, kernels) if native else PackedLinear(child, batch_hint))
                count += 1
    log.info("%d bf16 linear layers use %s", count,
             "the native small-batch kernel" if kernels is not None else "oneDNN packed weights")
    return count


def use_native_norms(model: nn.Module) -> int:
    """Point every bf16 RMSNorm of ``model`` at the native kernel; returns how many."""
    from dashserve.model.layers import RMSNorm

    kernels = decode_ops_module()
    if kernels is None:
        return 0
    norms = [m for m in model.modules()
             if isinstance(m, RMSNorm) and m.weight.dtype == torch.bfloat16
             and m.weight.shape[0] % 16 == 0]
    for norm in norms:
        norm.kernels = kernels
    return len(norms)
