"""Native CPU kernels, built once per machine and environment (``kernel_build``); torch
fallbacks when unavailable.

``wait=True`` (the default) builds a kernel that is not built yet and waits for it; with
``wait=False`` only a finished build is loaded, so a server can start on the torch path and
switch when a background build (``kernel_build.build_in_background``) finishes.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType

from dashserve.model import kernel_build

log = logging.getLogger(__name__)

_loaded: dict[str, ModuleType] = {}
_failed: set[str] = set()
_lock = threading.Lock()


def _module(name: str, wait: bool) -> ModuleType | None:
    """Kernel ``name`` for this CPU, or None (no compiler, DASHSERVE_NATIVE=0, a failed
    build, or not built yet and ``wait`` is false)."""
    if kernel_build.native_disabled():
        return None
    with _lock:
        if name in _loaded or name in _failed:
            return _loaded.get(name)
        try:
            module = kernel_build.load_built(name)
            if module is None:
                if not wait:
                    return None
                module = kernel_build.compile_kernel(name)
        except Exception as exc:  # no compiler or headers: the torch path still works
            log.warning("native CPU kernel %s unavailable (%s); using the torch path", name, exc)
            _failed.add(name)
            return None
        _loaded[name] = module
        return module


def paged_decode_module(wait: bool = True) -> ModuleType | None:
    """Decode attention read straight from the paged KV cache."""
    return _module("paged_decode", wait)


def decode_ops_module(wait: bool = True) -> ModuleType | None:
    """bf16 decode kernels: small-batch linear, RMSNorm (AVX512-BF16 or AVX2+FMA CPUs; None
    elsewhere)."""
    module = _module("decode_ops", wait)
    if module is None or module.max_rows() == 0:
        return None
    return module


def all_built() -> bool:
    """Every kernel has a finished build (or the native kernels are off)."""
    return kernel_build.native_disabled() or all(kernel_build.is_built(n)
                                                 for n in kernel_build.NAMES)


def decode_ops_expected() -> bool:
    """The bf16 decode kernels are built or can be built here (a compiler and AVX2 or
    better): the basis for picking bf16 before a background build has finished."""
    if decode_ops_module(wait=False) is not None:
        return True
    return ("decode_ops" not in _failed and kernel_build.can_build()
            and kernel_build.isa_tag() != "generic")
