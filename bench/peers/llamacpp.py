"""llama.cpp as a benchmark peer: build its server, convert checkpoints to GGUF, run it.

Usage:
    python bench/peers/llamacpp.py build
    python bench/peers/llamacpp.py convert CKPT_DIR [--outtype bf16]
    python bench/peers/llamacpp.py serve GGUF [--port 8090 --slots 16 --threads 2]
    python bench/peers/llamacpp.py describe

Sources come from the registry's llama-cpp-python sdist (its vendored llama.cpp tree); the
C++ `llama-server` and `llama-bench` are built with cmake under ~/.cache/dashserve/peers/.
If the C++ server cannot be built, llama-cpp-python's own (Python) server is installed
instead and `describe()["server_kind"]` says so.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("bench.peers.llamacpp")

PACKAGE_VERSION = "0.3.36"
DEFAULT_CACHE = Path.home() / ".cache" / "dashserve" / "peers" / "llamacpp"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF", "-DGGML_CUDA=OFF",
)
TARGETS = ("llama-server", "llama-bench")
JOBS = 2


class PeerError(RuntimeError):
    """The llama.cpp peer could not be built, converted or started."""


def _cache(cache_dir: Path | None) -> Path:
    path = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], what: str, log_path: Path | None = None, **kw) -> str:
    """Run a command with its output going to a log file, logging progress ("[n/m]" steps)
    every 30 s and its duration; raise PeerError with the output's tail on failure."""
    t0 = time.perf_counter()
    log.info("%s: %s", what, " ".join(map(str, cmd)))
    with contextlib.ExitStack() as stack:
        if log_path is None:
            sink = stack.enter_context(tempfile.NamedTemporaryFile("wb", suffix=".log"))
            log_path = Path(sink.name)
        else:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            sink = stack.enter_context(open(log_path, "wb"))
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, **kw)
        next_report = t0 + 30
        while proc.poll() is None:
            time.sleep(0.5)
            if time.perf_counter() >= next_report:
                next_report += 30
                steps = re.findall(r"^\[\d+/\d+\]", _tail(log_path, 20000), re.M)
                log.info("%s: %s %.0f s", what, steps[-1] if steps else "running", time.perf_counter() - t0)
        text = log_path.read_text(errors="replace")
    log.info("%s: exit %d after %.1f s", what, proc.returncode, time.perf_counter() - t0)
    if proc.returncode != 0:
        raise PeerError(f"{what} failed (exit {proc.returncode}):\n{text[-3000:]}")
    return text


def _tail(path: Path, n: int) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - n))
        return f.read().decode(errors="replace")


def _pip(*args: str, what: str) -> str:
    return _run([sys.executable, "-m", "pip", *args], what)


def fetch_sources(cache_dir: Path | None = None) -> Path:
    """Download and unpack the llama-cpp-python sdist; return its vendored llama.cpp tree."""
    cache = _cache(cache_dir)
    root = cache / "src" / f"llama_cpp_python-{PACKAGE_VERSION}"
    vendored = root / "vendor" / "llama.cpp"
    if (vendored / "CMakeLists.txt").exists():
        return vendored
    sdist = cache / "sdist" / f"llama_cpp_python-{PACKAGE_VERSION}.tar.gz"
    if not sdist.exists():
        _pip("download", "--no-binary", ":all:", "--no-deps", f"llama-cpp-python=={PACKAGE_VERSION}",
             "-d", str(sdist.parent), what="download sdist")
    t0 = time.perf_counter()
    with tarfile.open(sdist) as tar:
        tar.extractall(cache / "src", filter="data")
    log.info("unpacked %s in %.1f s", sdist.name, time.perf_counter() - t0)
    return vendored


def upstream_commit(vendored: Path) -> str:
    """The llama.cpp commit this llama-cpp-python release vendors (from its changelog)."""
    changelog = (vendored.parent.parent / "CHANGELOG.md").read_text(encoding="utf-8")
    section = changelog.split(f"## [{PACKAGE_VERSION}]", 1)[-1].split("\n## [", 1)[0]
    found = re.search(r"llama\.cpp@([0-9a-f]{7,40})", section)
    return found.group(1) if found else "unknown"


def _stamp_path(cache: Path) -> Path:
    return cache / "build.json"


def _build_cpp(vendored: Path, build_dir: Path) -> dict:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    commit = upstream_commit(vendored)
    flags = [*CMAKE_FLAGS, f"-DLLAMA_BUILD_COMMIT={commit}"]
    _run(["cmake", "-S", str(vendored), "-B", str(build_dir), *generator, *flags], "cmake configure")
    t0 = time.perf_counter()
    _run(["cmake", "--build", str(build_dir), "-j", str(JOBS), "--target", *TARGETS], "cmake build",
         log_path=build_dir.parent / "logs" / "build.log")
    seconds = time.perf_counter() - t0
    server = build_dir / "bin" / "llama-server"
    if not server.exists():
        raise PeerError(f"build finished but {server} is missing")
    return {"server_kind": "cpp", "server": str(server), "bench": str(build_dir / "bin" / "llama-bench"),
            "cmake_flags": flags, "generator": "Ninja" if generator else "Unix Makefiles",
            "build_seconds": round(seconds, 1), "upstream_commit": commit}


def _build_python_server(cache: Path, vendored: Path) -> dict:
    """Fallback: llama-cpp-python's own server, installed into a private target directory."""
    target = cache / "pyserver"
    sdist = vendored.parent.parent
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(JOBS),
           "CMAKE_ARGS": " ".join(f for f in CMAKE_FLAGS if "BUILD_TYPE" not in f)}
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "pip", "install", "--target", str(target), f"{sdist}[server]"],
         "build llama-cpp-python server", log_path=cache / "logs" / "pyserver-build.log", env=env)
    launcher = cache / "bin" / "llama-server-py"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(f'#!/bin/sh\nPYTHONPATH="{target}" exec "{sys.executable}" -m llama_cpp.server "$@"\n')
    launcher.chmod(0o755)
    return {"server_kind": "python", "server": str(launcher), "bench": None,
            "cmake_flags": env["CMAKE_ARGS"].split(), "generator": "scikit-build-core",
            "build_seconds": round(time.perf_counter() - t0, 1), "upstream_commit": upstream_commit(vendored)}


def built_server(cache_dir: Path | None = None) -> dict | None:
    """The build record of llama-server when it is built and still there (builds nothing)."""
    try:
        info = json.loads(_stamp_path(_cache(cache_dir)).read_text())
    except (OSError, ValueError):
        return None
    return info if Path(info.get("server", "")).is_file() else None


def ensure_llama_server(cache_dir: Path | None = None) -> Path:
    """Build llama-server (and llama-bench) once; return the server binary's path."""
    cache = _cache(cache_dir)
    stamp = _stamp_path(cache)
    info = built_server(cache)
    if info is not None:
        return Path(info["server"])
    vendored = fetch_sources(cache)
    log.info("building llama.cpp %s tools with -j%d (several minutes on 2 cores)", upstream_commit(vendored), JOBS)
    try:
        info = _build_cpp(vendored, cache / "build")
    except (PeerError, OSError) as exc:
        log.error("C++ llama-server build failed, falling back to llama-cpp-python's server: %s", exc)
        info = _build_python_server(cache, vendored)
    info["package"] = f"llama-cpp-python=={PACKAGE_VERSION}"
    stamp.write_text(json.dumps(info, indent=2))
    log.info("llama.cpp peer ready: %s (%s server)", info["server"], info["server_kind"])
    return Path(info["server"])


def llama_bench_path(cache_dir: Path | None = None) -> Path | None:
    """Path of the built llama-bench, or None when only the Python server exists."""
    ensure_llama_server(cache_dir)
    bench = json.loads(_stamp_path(_cache(cache_dir)).read_text()).get("bench")
    return Path(bench) if bench else None


def _converter_pythonpath(cache: Path, vendored: Path) -> str:
    """gguf-py plus a directory holding `sentencepiece`, which the Qwen converter imports
    (then falls back to the BPE vocab when there is no tokenizer.model)."""
    deps = cache / "convert-deps"
    if not (deps / "sentencepiece").exists():
        try:
            _pip("install", "--target", str(deps), "--only-binary", ":all:", "--no-deps",
                 "sentencepiece", what="install sentencepiece for the converter")
        except PeerError as exc:
            log.warning("no sentencepiece wheel (%s); using an import-only stand-in", exc)
            (deps / "sentencepiece").mkdir(parents=True, exist_ok=True)
            (deps / "sentencepiece" / "__init__.py").write_text(
                '"""Import-only stand-in; the converter falls back to BPE without tokenizer.model."""\n'
                "class SentencePieceProcessor:\n    pass\n")
    return os.pathsep.join([str(vendored / "gguf-py"), str(deps)])


def _gguf_key(ckpt_dir: Path, outtype: str) -> str:
    parts = [str(ckpt_dir.resolve()), outtype, PACKAGE_VERSION]
    for f in sorted(ckpt_dir.glob("*.safetensors")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    if len(parts) == 3:
        raise PeerError(f"no *.safetensors in {ckpt_dir}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def ensure_gguf(ckpt_dir: Path, outtype: str = "bf16", cache_dir: Path | None = None) -> Path:
    """Convert a Hugging Face checkpoint directory to GGUF once (cached by path, weights, outtype)."""
    cache = _cache(cache_dir)
    ckpt_dir = Path(ckpt_dir)
    out = cache / "gguf" / f"{ckpt_dir.resolve().name}-{_gguf_key(ckpt_dir, outtype)}-{outtype}.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    vendored = fetch_sources(cache)
    env = {**os.environ, "PYTHONPATH": _converter_pythonpath(cache, vendored),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    partial = out.with_suffix(".gguf.partial")
    t0 = time.perf_counter()
    _run([sys.executable, str(vendored / "convert_hf_to_gguf.py"), str(ckpt_dir),
          "--outtype", outtype, "--outfile", str(partial)], "convert to GGUF", env=env)
    partial.rename(out)
    log.info("converted %s -> %s (%.2f GB) in %.1f s", ckpt_dir, out.name,
             out.stat().st_size / 1e9, time.perf_counter() - t0)
    return out


def server_command(server: Path, gguf: Path, port: int, slots: int, threads: int, ctx_per_slot: int) -> list[str]:
    """The command line that starts the peer server (C++ or Python fallback)."""
    if server.name == "llama-server-py":
        return [str(server), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(ctx_per_slot)]
    return [str(server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
            "-t", str(threads), "-tb", str(threads), "-c", str(slots * ctx_per_slot),
            "-np", str(slots), "--no-ui", "--jinja"]


def _wait_healthy(proc: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.5)
    tail = _tail(log_path, 4000)
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not healthy after {timeout_s:.0f} s"
    raise PeerError(f"llama-server {state}; log tail ({log_path}):\n{tail}")


@contextlib.contextmanager
def start_llama_server(gguf: Path, port: int, slots: int = 16, threads: int = 2,
                       ctx_per_slot: int = 4096, timeout_s: float = 180.0,
                       cache_dir: Path | None = None) -> Iterator[str]:
    """Run the peer server on 127.0.0.1:port until the block exits; yield its `/v1` base URL."""
    server = ensure_llama_server(cache_dir)
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise PeerError(f"port {port} is already in use")
    cmd = server_command(server, Path(gguf), port, slots, threads, ctx_per_slot)
    log_path = _cache(cache_dir) / "logs" / f"llama-server-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting: %s", " ".join(cmd))
    t0 = time.perf_counter()
    with open(log_path, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    health = f"http://127.0.0.1:{port}/health" if server.name == "llama-server" else f"http://127.0.0.1:{port}/v1/models"
    try:
        _wait_healthy(proc, health, log_path, timeout_s)
        log.info("llama-server ready on port %d after %.1f s (log: %s)", port, time.perf_counter() - t0, log_path)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tool_line(binary: str | None, *args: str) -> str:
    if not binary or not Path(binary).exists():
        return "unknown"
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=30)
        return (proc.stdout + proc.stderr).strip()
    return "unknown"


def system_info(server: Path) -> str:
    """ggml's CPU feature line (`llama_print_system_info`), read from the built libllama."""
    lib = server.parent / "libllama.so"
    if not lib.exists():
        return "unknown"
    llama = ctypes.CDLL(str(lib))
    llama.llama_print_system_info.restype = ctypes.c_char_p
    return llama.llama_print_system_info().decode().strip(" |")


def describe(cache_dir: Path | None = None) -> dict:
    """Version, commit, server binary, build flags and CPU features of the peer, for results tables."""
    stamp = _stamp_path(_cache(cache_dir))
    if not stamp.exists():
        return {"peer": "llama.cpp", "built": False}
    info = json.loads(stamp.read_text())
    if info["server_kind"] != "cpp":
        return {"peer": "llama.cpp", "built": True, **info, "version": info["package"]}
    version = _tool_line(info["server"], "--version")
    found = re.search(r"version: (\S+) \(build (\d+), commit (\w+)\)", version)
    return {"peer": "llama.cpp", "built": True, **info,
            "version": found.group(1) if found else version.splitlines()[0],
            "commit": found.group(3) if found else info["upstream_commit"],
            "system_info": system_info(Path(info["server"]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    sub.add_parser("describe")
    conv = sub.add_parser("convert")
    conv.add_argument("ckpt", type=Path)
    conv.add_argument("--outtype", default="bf16")
    serve = sub.add_parser("serve")
    serve.add_argument("gguf", type=Path)
    serve.add_argument("--port", type=int, default=8090)
    serve.add_argument("--slots", type=int, default=16)
    serve.add_argument("--threads", type=int, default=2)
    serve.add_argument("--ctx-per-slot", type=int, default=4096)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.cmd == "build":
        print(ensure_llama_server(args.cache_dir))
    elif args.cmd == "convert":
        print(ensure_gguf(args.ckpt, args.outtype, args.cache_dir))
    elif args.cmd == "describe":
        print(json.dumps(describe(args.cache_dir), indent=2))
    else:
        with start_llama_server(args.gguf, args.port, args.slots, args.threads, args.ctx_per_slot,
                                cache_dir=args.cache_dir) as url:
            print(f"serving at {url} (Ctrl-C to stop)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
