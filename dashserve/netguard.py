"""Fetching a client-given URL without letting the client reach our own network (SSRF).

``fetch`` accepts only http and https; resolves the host itself and refuses it when any
address is private, loopback, link-local (cloud metadata at 169.254.169.254), reserved,
multicast, shared (CGNAT) or IPv4-mapped IPv6; then connects to the address it checked
(the URL's host goes in ``Host`` and in TLS SNI, so a second DNS answer cannot swap it);
follows redirects itself, checking each hop the same way; and enforces connect and read
timeouts, an overall deadline and a byte cap (from ``Content-Length`` and while reading).
``allowed_domains`` limits hosts to those domains and their subdomains. ``allow_loopback``
lets tests fetch from 127.0.0.1; it is off unless an operator turns it on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

REDIRECTS = frozenset({301, 302, 303, 307, 308})
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchError(Exception):
    """A URL that could not or may not be fetched; ``message`` is safe to show the client."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class BlockedAddress(FetchError):
    """The URL leads to an address (or a domain) the policy refuses."""


class TooLarge(FetchError):
    """The body is larger than the byte cap."""


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Limits of one fetch."""

    max_bytes: int = 20 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    total_timeout_s: float = 30.0
    max_redirects: int = 5
    allowed_domains: tuple[str, ...] = ()  # empty: any public host
    allow_loopback: bool = False


@dataclass(frozen=True, slots=True)
class Fetched:
    content: bytes
    content_type: str
    url: str  # after redirects


def blocked_reason(ip: IPAddress, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` may not be contacted, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip.sixtofour
                                                  or ip.teredo):
        return "an IPv4 address embedded in IPv6"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified or ip.is_reserved:
        return "a reserved address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "a shared (CGNAT) address"
    if ip.is_private or not ip.is_global:
        return "a private address"
    return None


def domain_allowed(host: str, allowed: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    return not allowed or any(host == d or host.endswith("." + d)
                              for d in (a.lower().strip(".") for a in allowed))


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host``."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_address(url: httpx.URL, policy: FetchPolicy, resolve: Resolver) -> str:
    """The address to connect to for ``url``, after every check on the URL and its host."""
    if url.scheme not in ("http", "https"):
        raise BlockedAddress(f"only http and https URLs can be fetched, not {url.scheme!r}")
    host = url.host
    if not host:
        raise BlockedAddress("the URL has no host")
    if not domain_allowed(host, policy.allowed_domains):
        raise BlockedAddress(f"the host {host!r} is not in the allowed domains")
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = list(await resolve(host, url.port or (443 if url.scheme == "https"
                                                            else 80)))
    if not addresses:
        raise FetchError(f"cannot resolve host {host!r}")
    for address in addresses:
        reason = blocked_reason(ipaddress.ip_address(address.split("%")[0]),
                                policy.allow_loopback)
        if reason is not None:
            raise BlockedAddress(f"the host {host!r} resolves to {reason}, which may not be "
                                 "fetched")
    return addresses[0]


async def _get_once(client: httpx.AsyncClient, url: httpx.URL, address: str,
                    policy: FetchPolicy) -> Fetched | httpx.URL:
    """One request to ``address``; the redirect target, or the body."""
    host_header = url.netloc.decode("ascii")
    target = url.copy_with(host=address)
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    request = client.build_request("GET", target, headers={"Host": host_header},
                                   extensions=extensions)
    response = await client.send(request, stream=True)
    try:
        if response.status_code in REDIRECTS and "location" in response.headers:
            return url.join(response.headers["location"])
        if response.status_code >= 400:
            raise FetchError(f"fetching the URL failed: HTTP {response.status_code}")
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > policy.max_bytes:
            raise TooLarge(f"the resource is larger than {policy.max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > policy.max_bytes:
                raise TooLarge(f"the resource is larger than {policy.max_bytes} bytes")
            chunks.append(chunk)
        return Fetched(b"".join(chunks), response.headers.get("content-type", ""), str(url))
    finally:
        await response.aclose()


async def _fetch(url: httpx.URL, policy: FetchPolicy, resolve: Resolver) -> Fetched:
    timeout = httpx.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False,
                                 verify=True) as client:
        for _ in range(policy.max_redirects + 1):
            address = await checked_address(url, policy, resolve)
            result = await _get_once(client, url, address, policy)
            if isinstance(result, Fetched):
                return result
            url = result
    raise FetchError(f"more than {policy.max_redirects} redirects")


async def fetch(url: str, policy: FetchPolicy | None = None, *,
                resolve: Resolver = system_resolve) -> Fetched:
    """GET ``url`` under ``policy`` (see the module docstring); raises ``FetchError``."""
    policy = policy or FetchPolicy()
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise FetchError("the URL is not valid") from exc
    try:
        return await asyncio.wait_for(_fetch(parsed, policy, resolve), policy.total_timeout_s)
    except FetchError:
        raise
    except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
        raise FetchError("fetching the URL timed out") from exc
    except (httpx.HTTPError, OSError, ValueError) as exc:
        raise FetchError(f"fetching the URL failed: {type(exc).__name__}") from exc
