"""The SSRF-safe fetcher against a loopback server, with the loopback switch on and off."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from dashserve.netguard import (
    BlockedAddress,
    FetchError,
    FetchPolicy,
    TooLarge,
    blocked_reason,
    fetch,
)
from tests.utils.media_server import MediaServer, media_server

OPEN = FetchPolicy(allow_loopback=True)


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with media_server() as s:
        s.routes["/a.png"] = (b"\x89PNG-bytes", "image/png")
        yield s


async def test_fetches_from_loopback_only_when_allowed(server: MediaServer) -> None:
    got = await fetch(server.url("/a.png"), OPEN)
    assert got.content == b"\x89PNG-bytes" and got.content_type == "image/png"
    with pytest.raises(BlockedAddress, match="loopback"):
        await fetch(server.url("/a.png"))
    assert len(server.hosts) == 1  # the refused fetch never connected


async def test_names_resolving_to_loopback_are_refused() -> None:
    with pytest.raises(BlockedAddress, match="loopback"):
        await fetch("http://localhost:9/x.png")


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/", "http://192.168.0.1/",
    "http://172.16.5.4/", "http://100.64.0.1/", "http://0.0.0.0/", "http://224.0.0.1/",
    "http://[::ffff:127.0.0.1]/", "http://[fe80::1]/", "http://[fc00::1]/", "http://240.0.0.1/",
])
async def test_private_and_special_addresses_are_refused(url: str) -> None:
    with pytest.raises(BlockedAddress):
        await fetch(url, OPEN)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png",
                                 "gopher://x/", "not a url"])
async def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(FetchError):
        await fetch(url, OPEN)


async def test_every_redirect_is_checked(server: MediaServer) -> None:
    got = await fetch(server.url("/redirect?to=/a.png"), OPEN)
    assert got.content == b"\x89PNG-bytes" and got.url.endswith("/a.png")
    with pytest.raises(BlockedAddress, match="link-local"):
        await fetch(server.url("/redirect?to=http://169.254.169.254/latest"), OPEN)
    with pytest.raises(BlockedAddress):
        await fetch(server.url("/redirect?to=file:///etc/passwd"), OPEN)
    loop = server.url("/redirect?to=" + server.url("/redirect?to=/a.png"))
    with pytest.raises(FetchError, match="redirects"):
        await fetch(loop, FetchPolicy(allow_loopback=True, max_redirects=1))


async def test_connects_to_the_checked_address(server: MediaServer) -> None:
    """The host is resolved once, by us; the URL's name only travels in ``Host``."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    got = await fetch(f"http://images.test:{server.port}/a.png", OPEN, resolve=resolve)
    assert got.content == b"\x89PNG-bytes"
    assert calls == ["images.test"] and server.hosts == [f"images.test:{server.port}"]

    async def rebinding(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]  # one public, one private answer

    with pytest.raises(BlockedAddress, match="private"):
        await fetch("http://images.test/a.png", OPEN, resolve=rebinding)


async def test_byte_cap_from_length_and_while_streaming(server: MediaServer) -> None:
    server.routes["/big"] = (b"y" * 5000, "image/png")
    small = FetchPolicy(allow_loopback=True, max_bytes=4096)
    with pytest.raises(TooLarge):
        await fetch(server.url("/big"), small)
    with pytest.raises(TooLarge):
        await fetch(server.url("/chunked/50000"), small)
    assert len((await fetch(server.url("/chunked/4000"), small)).content) == 4000


async def test_domain_allowlist_and_errors(server: MediaServer) -> None:
    only = FetchPolicy(allow_loopback=True, allowed_domains=("example.com",))
    with pytest.raises(BlockedAddress, match="allowed domains"):
        await fetch(server.url("/a.png"), only)

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    got = await fetch(f"http://img.example.com:{server.port}/a.png", only, resolve=resolve)
    assert got.content == b"\x89PNG-bytes"
    with pytest.raises(FetchError, match="404"):
        await fetch(server.url("/missing.png"), OPEN)
    with pytest.raises(FetchError, match="timed out"):
        await fetch(server.url("/slow"), FetchPolicy(allow_loopback=True, read_timeout_s=0.3))


def test_blocked_reason_table() -> None:
    ip = ipaddress.ip_address
    assert blocked_reason(ip("8.8.8.8")) is None
    assert blocked_reason(ip("2606:4700::1111")) is None
    assert blocked_reason(ip("127.0.0.1")) == "a loopback address"
    assert blocked_reason(ip("127.0.0.1"), allow_loopback=True) is None
    assert blocked_reason(ip("::1"), allow_loopback=True) is None
    assert blocked_reason(ip("::ffff:8.8.8.8")) is not None
    assert blocked_reason(ip("100.100.100.200")) == "a shared (CGNAT) address"
