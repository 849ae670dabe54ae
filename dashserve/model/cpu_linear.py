"""Faster bf16 linear layers on CPU, where a decode step reads every weight once.

Picked once per model, by what the CPU can do:
- AVX512-BF16 (e.g. AMD Zen 4): our native kernel streams each weight row once for one or two
  input rows (about 1.4x oneDNN's rate there); oneDNN, which uses AMX where the CPU has it,
  takes larger batches from the same row-major weight.
- AVX2 + FMA without bf16 math (e.g. AMD Zen 3), where torch's own bf16 matmul is several
  times slower than float32: the native kernel widens weights to float32 in registers for up
  to ``max_rows()`` input rows (decode batches, chunked beyond that), and prompt-sized batches
  widen the weight once and run float32 BLAS. Weights stay bf16 in memory either way, so
  decode reads half the bytes of a float32 model.
- No native kernel (no compiler) but oneDNN bf16: weights are reordered once into oneDNN's
  blocked layout, which its small-batch kernels read faster than a row-major one.
Results match ``F.linear`` to bf16 rounding.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from dashserve.model.cpu_kernels import decode_ops_expected, decode_ops_module

log = logging.getLogger(__name__)

# Rows up to which the AVX512-BF16 kernel beats oneDNN (measured: 1.4x at 1 row, 1.1x at 2,
# even at 4, slower beyond).
NATIVE_ROWS_WITH_ONEDNN = 2
# Without bf16 math, rows beyond which widening the weight once for float32 BLAS beats
# running the native kernel over chunks of max_rows() rows.
WIDEN_ROWS = 64


def onednn_bf16() -> bool:
    """oneDNN has bf16 kernels for this CPU (AVX512 or AMX); torch's bf16 matmul is fast."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    )


def packing_available(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether ``pack_linears`` applies: bf16 weights on a CPU."""
    return device.type == "cpu" and dtype == torch.bfloat16


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
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x.reshape(-1, self.in_features), self.packed_weight, self.bias, "none", [], ""
        )
        return out.view(*shape[:-1], self.out_features)


class NativeLinear(nn.Module):
    """A bf16 linear layer: our kernel for the row counts where it wins (``kernels`` may be
    None: then only the fallback), oneDNN bf16 or widened float32 BLAS beyond."""

    def __init__(self, linear: nn.Linear, kernels: object | None, onednn: bool) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight  # shared, not copied: a tied lm_head stays tied
        self.bias = linear.bias
        self._onednn = onednn
        self._kernels: object | None = None
        # the kernel takes up to _chunk rows a call; up to _native_rows rows it is used at all
        self._chunk = 0
        self._native_rows = 0
        # while a kernel build is awaited on a CPU without bf16 math: the weight widened once
        # (see widen_until_attached), so the torch path need not widen it at every step
        self._widened: torch.Tensor | None = None
        if kernels is not None:
            self.attach(kernels)

    def widen_until_attached(self) -> None:
        """Keep a float32 copy of the weight until ``attach`` (torch path, no oneDNN bf16)."""
        if not self._onednn and self._kernels is None:
            self._widened = self.weight.detach().float()

    def attach(self, kernels: object) -> bool:
        """Use the native kernel from now on (when it takes this layer's shape); between
        forward passes only."""
        if self.in_features % kernels.k_multiple() != 0:  # type: ignore[attr-defined]
            return False
        chunk = kernels.max_rows()  # type: ignore[attr-defined]
        self._native_rows = min(chunk, NATIVE_ROWS_WITH_ONEDNN) if self._onednn else WIDEN_ROWS
        self._chunk = chunk
        self._kernels = kernels
        self._widened = None
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features)
        rows = flat.shape[0]
        if rows > self._native_rows:
            if self._onednn:
                return F.linear(x, self.weight, self.bias)
            bias = None if self.bias is None else self.bias.float()
            weight = self._widened if self._widened is not None else self.weight.float()
            return F.linear(x.float(), weight, bias).to(x.dtype)
        linear = self._kernels.linear  # type: ignore[union-attr]
        out: torch.Tensor
        if rows <= self._chunk:
            out = linear(flat, self.weight, self.bias)
        else:
            out = torch.cat([linear(part, self.weight, self.bias)
                             for part in torch.split(flat, self._chunk)])
        return out.view(*shape[:-1], self.out_features)


def pack_linears(model: nn.Module, batch_hint: int = 1, wait: bool = True) -> int:
    """Replace every bf16 nn.Linear in ``model`` by the faster decode layer; returns how many.

    With the native kernel weights stay as they are; with oneDNN packing a tied lm_head keeps
    the embedding's weight for lookups and gets its own packed copy. ``wait=False`` takes the
    kernel only if it is built already; while a build is expected, layers stay ready for
    ``attach_native_kernels`` (no oneDNN packing).
    """
    kernels = decode_ops_module(wait)
    pending = kernels is None and not wait and decode_ops_expected()
    onednn = onednn_bf16()
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child.weight.dtype == torch.bfloat16:
                fits = kernels is not None and child.in_features % kernels.k_multiple() == 0
                layer: nn.Module
                if onednn and not fits and not pending:
                    layer = PackedLinear(child, batch_hint)
                else:
                    layer = NativeLinear(child, kernels if fits else None, onednn)
                setattr(module, child_name, layer)
                count += 1
    if pending and not onednn:
        _widen_while_pending(model)
    log.info("%d bf16 linear layers use %s%s", count,
             "the native small-batch kernel" if kernels is not None
             else "the torch path until the native kernel is built" if pending
             else "no native kernel",
             ", oneDNN bf16 beyond" if onednn else ", float32 BLAS on widened weights beyond")
    return count


# Share of the machine's memory that float32 copies of the weights may take while the native
# kernels build (beyond it, the torch path widens each weight at every step instead).
WIDEN_MEMORY_SHARE = 0.25


def _widen_while_pending(model: nn.Module) -> None:
    """Widen the weights once for the torch path while the kernel builds, memory allowing."""
    layers = [m for m in model.modules() if isinstance(m, NativeLinear)]
    needed = sum(m.weight.numel() * 4 for m in layers)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return
    if needed > WIDEN_MEMORY_SHARE * memory:
        return
    for layer in layers:
        layer.widen_until_attached()
    log.info("float32 copies of the weights (%.2f GiB) serve until the native kernel is built",
             needed / 2**30)


def use_native_ops(model: nn.Module, wait: bool = True) -> int:
    """Point every bf16 RMSNorm and attention block of ``model`` at the native kernels (norms;
    fused q/k norm and rotary embedding); returns how many modules."""
    from dashserve.model.layers import RMSNorm
    from dashserve.model.qwen import QwenAttention

    kernels = decode_ops_module(wait)
    if kernels is None:
        return 0
    norms = [m for m in model.modules()
             if isinstance(m, RMSNorm) and m.weight.dtype == torch.bfloat16
             and m.weight.shape[0] % 16 == 0]
    for norm in norms:
        norm.kernels = kernels
    attention = [m for m in model.modules()
                 if isinstance(m, QwenAttention) and m.o_proj.weight.dtype == torch.bfloat16]
    for block in attention:
        block.kernels = kernels
    return len(norms) + len(attention)


def attach_native_kernels(model: nn.Module) -> int:
    """Switch a model prepared with ``wait=False`` to native kernels built since (call between
    forward passes); returns how many modules switched."""
    kernels = decode_ops_module(wait=False)
    if kernels is None:
        return 0
    linears = sum(layer.attach(kernels) for layer in model.modules()
                  if isinstance(layer, NativeLinear) and layer._kernels is None)
    return linears + use_native_ops(model, wait=False)
