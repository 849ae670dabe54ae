"""What an idle pause costs the next piece of work on this machine.

Usage: python bench/idle_penalty.py [--pause-ms 0 20 300] [--repeats 30]

A server at one stream is idle between its requests and between the tokens of a request. On
a shared virtual machine its code and data leave the CPU's caches meanwhile, and the first
work after the pause runs far slower than the same work back to back. This times small,
fixed pieces of work each after a sleep of ``--pause-ms`` (median of ``--repeats``):

- ``python``: a loop of pure Python over a dict (no memory outside the interpreter's own);
- ``tokenizer library``: encoding one sentence with the Qwen tokenizer (``tokenizers``);
- ``dashserve tokenizer``: the same through ``Tokenizer.encode_plain`` (pieces kept);
- ``loopback send``: 1,200 bytes on a TCP connection to another process that answers.

The ratio of a paused figure to the back-to-back one is the idle penalty: it scales what
the front adds to time to first token at one stream (``bench_upstream.py``), whatever its
code does.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.checkpoints import bench_checkpoint  # noqa: E402
from dashserve.tokenizer import Tokenizer  # noqa: E402

SENTENCE = "user\nExplain in one paragraph why the sky is blue."


def spin(seconds: float) -> None:
    """Keep the CPU busy for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def timed(work: Callable[[], object], pause_s: float, repeats: int,
          before: Callable[[], object] | None = None) -> float:
    """Median microseconds of ``work`` run right after a ``pause_s`` sleep."""
    samples = []
    for _ in range(repeats):
        if before is not None:
            before()
        time.sleep(pause_s)
        t0 = time.perf_counter()
        work()
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


ECHO = """
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
try:
    while conn.recv(65536):
        conn.sendall(b"k")
except OSError:
    pass
"""


def echo_peer() -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """A connection to another process that answers each message with one byte (a process
    of its own, not a fork: a fork would leave this one's pages copy-on-write)."""
    peer = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE)
    assert peer.stdout is not None
    port = int(peer.stdout.readline())
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, peer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pause-ms", type=float, nargs="+", default=[0.0, 20.0, 300.0],
                        help="pauses, run shortest first")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    tokenizer = Tokenizer.from_dir(bench_checkpoint("qwen3-tiny"))
    library = tokenizer.prepare_plain()
    table = {i: i * 7 for i in range(4096)}
    client, peer = echo_peer()
    message = b"x" * 1200
    works: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
        "python": (lambda: sum(table[i] for i in range(0, 4096, 16)), None),
        "tokenizer library": (lambda: library.encode(SENTENCE, add_special_tokens=False), None),
        "dashserve tokenizer": (lambda: tokenizer.encode_plain(SENTENCE), None),
        "loopback send": (lambda: client.send(message), lambda: client.recv(16)),
    }
    client.send(message)  # the first answer is read by the first `before`
    try:
        cells: dict[str, list[float]] = {name: [] for name in works}
        for pause_ms in args.pause_ms:  # shortest first: a long pause leaves the machine
            spin(0.2)  # slow for a while after it, so each column starts from a busy CPU
            for name, (work, before) in works.items():
                cells[name].append(timed(work, pause_ms / 1e3, args.repeats, before))
        head = f"{'work':>20}" + "".join(f"{f'{p:g} ms pause':>15}" for p in args.pause_ms)
        lines = [head, "-" * len(head)]
        for name, row in cells.items():
            lines.append(f"{name:>20}" + "".join(f"{c:>12.1f} us" for c in row))
        sys.stdout.write("\n".join(lines) + "\n")
    finally:
        client.close()
        peer.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
