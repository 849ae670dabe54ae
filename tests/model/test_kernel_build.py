"""Kernel builds: a lock that dies with its holder, a killed build that never blocks the next
start, and build names that keep two installs apart."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dashserve.model import kernel_build
from tests.integration.conftest import free_port
from tests.utils.http import get_json

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _lock_is_free(lock_file: Path) -> bool:
    with open(lock_file, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def test_lock_dies_with_its_holder(tmp_path: Path) -> None:
    directory = tmp_path / "dashserve_x"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from dashserve.model.kernel_build import build_lock
            with build_lock(Path({str(directory)!r})):
                print("held", flush=True)
                time.sleep(600)
        """)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lock_file = tmp_path / "dashserve_x.lock"
        assert not _lock_is_free(lock_file)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 5
        while not _lock_is_free(lock_file):
            assert time.monotonic() < deadline, "the lock outlived its holder"
            time.sleep(0.05)
        with kernel_build.build_lock(directory):  # taken at once
            pass
    finally:
        holder.kill()
        holder.wait(10)


def test_install_identities_build_apart(tmp_path: Path) -> None:
    """Another virtualenv (another sys.prefix) builds under another name, and does not take
    this environment's finished build for its own."""
    assert kernel_build.build_name("decode_ops", "torch A") != kernel_build.build_name(
        "decode_ops", "torch B")
    assert kernel_build.build_name("decode_ops", "torch A") == kernel_build.build_name(
        "decode_ops", "torch A")
    identity = kernel_build.install_identity()
    assert sys.prefix in identity or str(Path(sys.prefix).resolve()) in identity
    import torch

    assert torch.__version__ in identity

    venv = tmp_path / "other-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    cache = tmp_path / "cache"
    ours = {}
    for name in kernel_build.NAMES:  # "built" in this environment: a finished build's marker
        directory = cache / "dashserve" / kernel_build.build_name(name)
        directory.mkdir(parents=True)
        (directory / "done").write_text("built\n")
        ours[name] = directory
    site = [p for p in sys.path if p.endswith("site-packages")]
    script = textwrap.dedent("""
        import json, sys
        from dashserve.model import kernel_build as kb
        print(json.dumps({"prefix": sys.prefix,
                          "dirs": {n: str(kb.build_dir(n)) for n in kb.NAMES},
                          "built": {n: kb.is_built(n) for n in kb.NAMES}}))
    """)
    env = _env(TORCH_EXTENSIONS_DIR=str(cache),
               PYTHONPATH=os.pathsep.join([str(ROOT), *site]))
    out = subprocess.run([str(venv / "bin" / "python"), "-c", script], env=env, check=True,
                         capture_output=True, text=True).stdout
    theirs = json.loads(out)
    assert Path(theirs["prefix"]).resolve() == venv.resolve()
    for name in kernel_build.NAMES:
        assert Path(theirs["dirs"][name]) != ours[name]
        assert Path(theirs["dirs"][name]).parent == ours[name].parent
        assert theirs["built"][name] is False
        assert (ours[name] / "done").is_file()


def _kill_compilers_in(directory: Path) -> None:
    """End the compilers a killed build left running in ``directory`` (by their ids)."""
    for proc in Path("/proc").iterdir():
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if proc.name.isdigit() and cwd.startswith(str(directory)):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
@pytest.mark.skipif(not kernel_build.can_build(), reason="no C++ compiler")
def test_killed_build_never_blocks_a_start(tmp_path: Path) -> None:
    """SIGKILL a build while the compiler runs (torch's lock file stays behind), then start
    the server: healthy within the normal time, on the torch path while kernels build."""
    cache = tmp_path / "cache"
    env = _env(TORCH_EXTENSIONS_DIR=str(cache), DASHSERVE_DATA_DIR=str(tmp_path / "data"))
    env.pop("DASHSERVE_NATIVE", None)
    build = subprocess.Popen([sys.executable, "-m", "dashserve", "build-kernels"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    torch_lock = cache / "dashserve" / kernel_build.build_name("decode_ops") / "lock"
    try:
        deadline = time.monotonic() + 120
        while not torch_lock.exists():
            assert build.poll() is None and time.monotonic() < deadline, "the build never began"
            time.sleep(0.1)
        time.sleep(1.0)  # the compiler is running
    finally:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait(10)
    assert torch_lock.exists()  # what used to make every later start wait forever
    _kill_compilers_in(cache)  # ninja's compilers run in their own groups: spare the machine

    port = free_port()
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "-m", "dashserve", "serve", "--demo-preset", "qwen3-tiny", "--port",
         str(port), "--api-key", "sk-kill-test", "--max-model-len", "512"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        status, health = 0, {}
        while time.monotonic() - started < 90 and server.poll() is None:
            try:
                status, health = get_json(base + "/health")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, health
        assert "kernels building in the background" in str(health["detail"])
        body = json.dumps({"model": "qwen-plus", "input": {"prompt": "hi"},
                           "parameters": {"max_tokens": 3}}).encode()
        request = urllib.request.Request(
            base + "/api/v1/services/aigc/text-generation/generation", data=body,
            headers={"Authorization": "Bearer sk-kill-test", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            assert 1 <= json.loads(r.read())["usage"]["output_tokens"] <= 3
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert "Application shutdown complete" in output, output[-2000:]
    # the background build stopped with the server: its lock is free again
    lock_file = torch_lock.parent.parent / f"{torch_lock.parent.name}.lock"
    deadline = time.monotonic() + 10
    while not _lock_is_free(lock_file):
        assert time.monotonic() < deadline, "the background build outlived the server"
        time.sleep(0.1)
