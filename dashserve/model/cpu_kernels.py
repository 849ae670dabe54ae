"""Native CPU kernels, compiled once per machine on first use; torch fallbacks when unavailable."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

_KERNELS = Path(__file__).parent / "kernels"
# decode_ops matches torch's rounding op for op, so no multiply-add may be fused behind its back
_EXTRA_CFLAGS = {"decode_ops": ["-ffp-contract=off"]}


@functools.cache
def _build(name: str) -> ModuleType | None:
    """Compile ``kernels/<name>.cpp`` for this CPU (cached on disk by torch), or None
    (no compiler, or DASHSERVE_NATIVE=0)."""
    if os.environ.get("DASHSERVE_NATIVE", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        started = time.monotonic()
        log.info("building native CPU kernel %s (once per machine, cached)...", name)
        module = load(
            name=f"dashserve_{name}_{_isa_tag()}_{_headers_tag()}",
            sources=[str(_KERNELS / f"{name}.cpp")],
            extra_cflags=["-O3", "-march=native", "-fopenmp", *_EXTRA_CFLAGS.get(name, [])],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # no compiler or headers: the torch path still works
        log.warning("native CPU kernel %s unavailable (%s); using the torch path", name, exc)
        return None
    log.info("native CPU kernel %s ready in %.1f s", name, time.monotonic() - started)
    return module


def _isa_tag() -> str:
    """The vector ISA that -march=native will target here: part of the build's name, so a
    build cached on one kind of CPU is never loaded on another."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    for tag, needed in (("avx512bf16", {"avx512_bf16", "avx512bw"}), ("avx512", {"avx512bw"}),
                        ("avx2", {"avx2", "fma"})):
        if needed <= flags:
            return tag
    return "generic"


def _headers_tag() -> str:
    """A digest of the shared headers: torch rebuilds when a source changes, not a header."""
    digest = hashlib.sha1()
    for header in sorted(_KERNELS.glob("*.h")):
        digest.update(header.read_bytes())
    return digest.hexdigest()[:8]


def paged_decode_module() -> ModuleType | None:
    """Decode attention read straight from the paged KV cache."""
    return _build("paged_decode")


def decode_ops_module() -> ModuleType | None:
    """bf16 decode kernels: small-batch linear, RMSNorm (AVX512-BF16 or AVX2+FMA CPUs; None
    elsewhere)."""
    module = _build("decode_ops")
    if module is None or module.max_rows() == 0:
        return None
    return module
