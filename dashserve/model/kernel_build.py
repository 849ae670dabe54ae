"""Compiling the native CPU kernels: build names, a lock that dies with its holder, builds in a
child process, and ``dashserve build-kernels``.

Each build has its own directory, named by the kernel, the CPU's vector ISA and a digest of
everything the binary depends on: its source and the shared headers, the compiler flags, the
torch version and install path, and the interpreter (version and prefix). Two virtualenvs or
torch installs on one machine therefore build side by side, and never rebuild or load each
other's builds.

Builds of one name are serialised by ``fcntl.flock`` on a lock file beside the build
directory; the operating system releases it when its holder exits, however it exits. Torch's
own lock file, which a killed build leaves behind (and on which torch would wait forever), is
removed before each build: only the holder of our lock can be building. A finished build is
marked by a ``done`` file and later loaded straight from its shared object.
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

KERNELS_DIR = Path(__file__).parent / "kernels"
NAMES = ("decode_ops", "paged_decode")
# decode_ops matches torch's rounding op for op, so no multiply-add may be fused behind its back
_EXTRA_CFLAGS = {"decode_ops": ["-ffp-contract=off"]}


def native_disabled() -> bool:
    """``DASHSERVE_NATIVE=0`` turns the native kernels off."""
    return os.environ.get("DASHSERVE_NATIVE", "1") == "0"


def can_build() -> bool:
    """Native kernels are on and a C++ compiler is installed (the build may still fail)."""
    return not native_disabled() and shutil.which(os.environ.get("CXX", "c++")) is not None


def cache_root() -> Path:
    """Where builds live: ``$TORCH_EXTENSIONS_DIR/dashserve`` or the user's cache directory."""
    base = os.environ.get("TORCH_EXTENSIONS_DIR")
    if not base:
        base = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                   / "torch_extensions")
    return Path(base) / "dashserve"


def isa_tag() -> str:
    """The vector ISA that -march=native targets here, so that a build cached on one kind of
    CPU is never loaded on another."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    for tag, needed in (("avx512bf16", {"avx512_bf16", "avx512bw"}), ("avx512", {"avx512bw"}),
                        ("avx2", {"avx2", "fma"})):
        if needed <= flags:
            return tag
    return "generic"


def install_identity() -> str:
    """The torch and interpreter a build links against."""
    import torch

    return (f"torch {torch.__version__} at {Path(torch.__file__).resolve().parent}; "
            f"python {sys.version.split()[0]} at {Path(sys.prefix).resolve()}")


def compile_flags(name: str) -> list[str]:
    return ["-O3", "-march=native", "-fopenmp", *_EXTRA_CFLAGS.get(name, [])]


def build_name(name: str, identity: str | None = None) -> str:
    """``dashserve_<kernel>_<isa>_<digest>``; the digest covers sources, flags and the
    install identity (``install_identity()`` unless given)."""
    digest = hashlib.sha1()
    for path in (KERNELS_DIR / f"{name}.cpp", *sorted(KERNELS_DIR.glob("*.h"))):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(" ".join(compile_flags(name)).encode())
    digest.update((identity if identity is not None else install_identity()).encode())
    return f"dashserve_{name}_{isa_tag()}_{digest.hexdigest()[:12]}"


def build_dir(name: str) -> Path:
    return cache_root() / build_name(name)


def is_built(name: str) -> bool:
    return (build_dir(name) / "done").is_file()


@contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """Hold the build lock of ``directory`` (waits while a live process holds it)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.lock", "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", directory.name)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_built(name: str) -> ModuleType | None:
    """The finished build of kernel ``name``, loaded; None when it is not built."""
    directory = build_dir(name)
    if not (directory / "done").is_file():
        return None
    import torch  # noqa: F401  (the extension links against torch's libraries)

    shared_object = directory / f"{directory.name}.so"
    spec = importlib.util.spec_from_file_location(directory.name, shared_object)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_kernel(name: str) -> ModuleType:
    """Build kernel ``name`` (or find it built) and load it; raises when it cannot be built."""
    directory = build_dir(name)
    with build_lock(directory):
        module = load_built(name)
        if module is not None:
            return module
        from torch.utils.cpp_extension import load

        started = time.monotonic()
        log.info("building native CPU kernel %s (once per machine and environment)...", name)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "lock").unlink(missing_ok=True)  # torch's, left behind by a killed build
        built: ModuleType = load(name=directory.name,
                                 sources=[str(KERNELS_DIR / f"{name}.cpp")],
                                 extra_cflags=compile_flags(name), extra_ldflags=["-fopenmp"],
                                 build_directory=str(directory), verbose=False)
        (directory / "done").write_text(install_identity() + "\n")
        log.info("native CPU kernel %s built in %.1f s", name, time.monotonic() - started)
        return built


# ----- builds in a child process, for a server that serves while they run -------------------

class _Background:
    def __init__(self) -> None:
        self.callbacks: list[Callable[[bool], None]] = []
        self.result: bool | None = None
        self.proc: subprocess.Popen[bytes] | None = None


_background: _Background | None = None
_background_lock = threading.Lock()


def build_in_background(on_done: Callable[[bool], None]) -> None:
    """Run ``dashserve build-kernels`` in a child process (at low priority) and call
    ``on_done(succeeded)`` from a watcher thread when it ends. One child per process serves
    every caller; the child is stopped when this process exits."""
    global _background
    with _background_lock:
        if _background is None:
            _background = _Background()
            _start(_background)
        if _background.result is None:
            _background.callbacks.append(on_done)
            return
        result = _background.result
    on_done(result)


def _start(bg: _Background) -> None:
    command = [sys.executable, "-m", "dashserve", "build-kernels", "--parent", str(os.getpid())]
    nice = shutil.which("nice")
    if nice is not None:
        command = [nice, "-n", "19", *command]
    log.info("native CPU kernels are not built yet: serving on the torch path while they "
             "build in the background")
    bg.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               start_new_session=True)
    atexit.register(stop_background_build)
    threading.Thread(target=_watch, args=(bg,), name="dashserve-kernel-build",
                     daemon=True).start()


def _watch(bg: _Background) -> None:
    assert bg.proc is not None
    ok = bg.proc.wait() == 0
    with _background_lock:
        bg.result = ok
        callbacks, bg.callbacks = bg.callbacks, []
    if not ok:
        log.warning("building the native CPU kernels failed; the torch path keeps serving")
    for callback in callbacks:
        callback(ok)


def stop_background_build() -> None:
    """Stop the background build, if one runs (its lock goes with it); at shutdown."""
    bg = _background
    if bg is not None and bg.proc is not None and bg.proc.poll() is None:
        try:
            os.killpg(bg.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _follow_parent(parent: int) -> None:
    """In a background build: end the build (compiler included) once the server that
    started it is gone, however it ended."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.killpg(os.getpgid(0), signal.SIGTERM)  # ninja stops the compilers it started

    threading.Thread(target=watch, name="dashserve-parent-watch", daemon=True).start()


# ----- dashserve build-kernels ------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--show", action="store_true",
                        help="print where each build lives and whether it is built; build nothing")
    parser.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # see build_in_background


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if native_disabled():
        print("native CPU kernels are off (DASHSERVE_NATIVE=0); nothing to build")  # noqa: T201
        return 0
    if args.show:
        for name in NAMES:
            state = "built" if is_built(name) else "not built"
            print(f"{name:<14} {state:<10} {build_dir(name)}")  # noqa: T201
        return 0
    if args.parent:
        _follow_parent(args.parent)
    failed = 0
    for name in NAMES:
        try:
            compile_kernel(name)
        except Exception as exc:  # no compiler or headers: the torch path still works
            failed += 1
            print(f"{name}: cannot be built ({type(exc).__name__}: {exc}); "  # noqa: T201
                  "the torch path is used instead", file=sys.stderr)
        else:
            print(f"{name:<14} ready  {build_dir(name)}")  # noqa: T201
    return 1 if failed else 0
