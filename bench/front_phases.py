"""Where the front's added time to first token goes, read off the wire (Linux, root).

Usage: python bench/front_phases.py [--requests 40] [--pause-s 0.7] [--num-tokens 8]

Starts the fake upstream of tests/upstream (``--token-delay-ms`` per token) and a ``dashserve
serve --upstream qwen-plus=llamacpp:URL`` front, then sends ``--requests`` streamed chat
requests one at a time, ``--pause-s`` apart (the front idles between them, as at one stream
in ``bench_upstream.py``). A separate process captures the loopback packets of both ports
(``AF_PACKET``, stamped by the kernel as they are sent), so the front is measured from the
outside, untouched. Per request:

- ``client body -> upstream request``: the client's last request packet to the front's
  request to the upstream: the front's wake-up and its work before the request leaves;
- ``upstream request -> its first token``: the upstream's own time (and the front's reading);
- ``first token -> client chunk``: the front relaying the first token;
- ``response headers - upstream request``: below zero when the front answered the client
  before its request to the upstream had left.

Prints p50 and p90 of each phase (milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import struct
import sys
import tempfile
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_upstream import (  # noqa: E402
    API_KEY,
    QUESTION,
    fake_upstream_cmd,
    front_cmd,
    process,
)
from bench.checkpoints import bench_checkpoint  # noqa: E402
from tests.ports import free_port  # noqa: E402

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # on loopback each packet is seen twice; the outgoing copy is kept
SO_TIMESTAMPNS = 35  # Linux: a struct timespec per packet, taken by the kernel


@dataclass(frozen=True)
class Packet:
    t: float  # seconds (CLOCK_REALTIME, the kernel's stamp)
    src: int  # TCP ports
    dst: int
    payload: bytes


def capture(ports: tuple[int, int], ready: Any, conn: Connection) -> None:
    """Collect the data-carrying TCP packets to or from ``ports`` on loopback until the parent
    sends anything on ``conn``; then send back the list."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind(("lo", 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.settimeout(0.2)
    packets: list[Packet] = []
    ready.set()
    while not conn.poll():
        try:
            data, ancillary, _, address = sock.recvmsg(65536, socket.CMSG_SPACE(16))
        except TimeoutError:
            continue
        if address[2] != PACKET_OUTGOING or len(data) < 54 or data[12:14] != b"\x08\x00":
            continue
        ip = data[14:]
        if ip[9] != socket.IPPROTO_TCP:
            continue
        tcp = ip[(ip[0] & 15) * 4:]
        src, dst = struct.unpack(">HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4:]
        if not payload or (src not in ports and dst not in ports):
            continue
        stamp = next((struct.unpack("=qq", d) for lvl, kind, d in ancillary
                      if lvl == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
        if stamp is not None:
            packets.append(Packet(stamp[0] + stamp[1] / 1e9, src, dst, payload))
    conn.send(packets)


def phases(packets: list[Packet], front: int, upstream: int) -> list[dict[str, float]]:
    """Per request, the times of its packets that mark the phases."""
    requests: list[dict[str, float]] = []
    current: dict[str, float] | None = None
    for p in sorted(packets, key=lambda p: p.t):
        if p.dst == front and p.payload.startswith(b"POST "):
            current = {"headers_in": p.t}
            requests.append(current)
        if current is None:
            continue
        if p.dst == front:
            current["body_in"] = p.t
        elif p.dst == upstream and p.payload.startswith(b"POST ") and "up_out" not in current:
            current["up_out"] = p.t
        elif p.src == upstream and b'"tokens": [' in p.payload and "token_in" not in current:
            current["token_in"] = p.t
        elif p.src == front and p.payload.startswith(b"HTTP/1.1 "):
            current["headers_out"] = p.t
        elif (p.src == front and "token_in" in current and "chunk_out" not in current
              and b'"content":"' in p.payload and b'"content":""' not in p.payload):
            current["chunk_out"] = p.t
    keys = ("body_in", "up_out", "token_in", "chunk_out", "headers_out")
    return [r for r in requests if all(k in r for k in keys)]


async def drive(front_url: str, n: int, pause_s: float, num_tokens: int) -> None:
    body = {"model": "qwen-plus", "stream": True, "max_tokens": num_tokens, "temperature": 0.0,
            "messages": [{"role": "user", "content": QUESTION}], "enable_thinking": False}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    limits = httpx.Limits(keepalive_expiry=pause_s + 1.0)
    async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as c:
        for _ in range(n):
            async with c.stream("POST", front_url + "/compatible-mode/v1/chat/completions",
                                json=body, headers=headers) as r:
                r.raise_for_status()
                async for _line in r.aiter_lines():
                    pass
            await asyncio.sleep(pause_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--pause-s", type=float, default=0.7)
    parser.add_argument("--num-tokens", type=int, default=8)
    parser.add_argument("--token-delay-ms", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    model_dir = bench_checkpoint("qwen3-tiny")
    work = Path(tempfile.mkdtemp(prefix="bench-phases-"))
    up_port, front_port = free_port(), free_port()
    upstream, front = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{front_port}"
    up_cmd = fake_upstream_cmd(up_port, args.num_tokens,
                               "--token-delay-ms", str(args.token_delay_ms))
    with process(up_cmd, upstream + "/health", work / "upstream.log"), \
            process(front_cmd(front_port, work, model_dir, [upstream]), front + "/health",
                    work / "front.log"):
        asyncio.run(drive(front, 2, 0.0, args.num_tokens))  # connections and caches warm
        ready = multiprocessing.Event()
        parent, child = multiprocessing.Pipe()
        catcher = multiprocessing.Process(target=capture, args=((front_port, up_port), ready,
                                                                child), daemon=True)
        catcher.start()
        if not ready.wait(10):
            raise RuntimeError("the capture process did not start (it needs root)")
        asyncio.run(drive(front, args.requests, args.pause_s, args.num_tokens))
        parent.send("stop")
        packets: list[Packet] = parent.recv()
        catcher.join(5)
    rows = phases(packets, front_port, up_port)
    spans = {
        "client body -> upstream request": ("body_in", "up_out"),
        "upstream request -> its first token": ("up_out", "token_in"),
        "first token -> client chunk": ("token_in", "chunk_out"),
        "response headers - upstream request": ("up_out", "headers_out"),
    }
    result: dict[str, Any] = {"requests": len(rows), "phases_ms": {}}
    print(f"{len(rows)} requests, {args.pause_s:g} s apart")  # noqa: T201
    for name, (a, b) in spans.items():
        values = sorted((r[b] - r[a]) * 1e3 for r in rows)
        if not values:
            continue
        p50 = statistics.median(values)
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        result["phases_ms"][name] = {"p50": p50, "p90": p90}
        print(f"{name:>38}: p50 {p50:7.3f} ms   p90 {p90:7.3f} ms")  # noqa: T201
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
