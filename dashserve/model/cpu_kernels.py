"""Native CPU kernels, compiled once per machine on first use; torch fallbacks when unavailable."""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).parent / "kernels" / "paged_decode.cpp"


@functools.cache
def paged_decode_module() -> ModuleType | None:
    """The compiled paged-decode extension, or None (no compiler, or DASHSERVE_NATIVE=0)."""
    if os.environ.get("DASHSERVE_NATIVE", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load

        started = time.monotonic()
        log.info("building native CPU kernels (once per machine, cached)...")
        module = load(
            name="dashserve_paged_decode", sources=[str(_SOURCE)],
            extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # no compiler or headers: the torch path still works
        log.warning("native CPU kernels unavailable (%s); using the torch path", exc)
        return None
    log.info("native CPU kernels ready in %.1f s", time.monotonic() - started)
    return module
