"""The network edge of the user-supplied providers: SSRF guard, TLS trust, per-origin clients.

Web Push endpoints and webhook URLs come from users, so a sender must never let one of them
point chinwag at its own network (loopback, private ranges, cloud metadata at link-local
addresses). Operators who run providers on private addresses on purpose (the local fakes, an
intranet webhook) name them in ``CHINWAG_ALLOW_PRIVATE_ENDPOINTS``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import h2.exceptions
import httpx

from chinwag.push.h2pool import H2Pool, H2Unavailable

# All a user learns (in last_error) when their endpoint cannot be reached: refused, reset, timed
# out and TLS failures look alike, so a webhook cannot be used to scan ports.
UNREACHABLE = "endpoint unreachable"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that resolve to this machine on every resolver, refused even when we do not resolve.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


@dataclass(frozen=True)
class Allowance:
    """The parsed ``CHINWAG_ALLOW_PRIVATE_ENDPOINTS``: host names and networks."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, allow: Iterable[str]) -> Allowance:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in allow:
            entry = entry.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def is_public(address: IPAddress) -> bool:
    """False for every address a server of ours could be reached at from inside."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


@dataclass(frozen=True)
class _ParsedEndpoint:
    host: str
    port: int
    literal: IPAddress | None


def _parse(url: str) -> _ParsedEndpoint | str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "endpoint is not a valid URL"
    if parts.scheme != "https":
        return "endpoint must use https"
    host = parts.hostname
    if not host:
        return "endpoint has no host"
    if parts.username is not None or parts.password is not None:
        return "endpoint must not carry credentials"
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    return _ParsedEndpoint(host=host, port=port or 443, literal=literal)


def _refusal(host: str, addresses: Sequence[IPAddress], allowance: Allowance) -> str | None:
    for address in addresses:
        if not is_public(address) and not allowance.allows_address(address):
            return f"endpoint host {host!r} is at non-public address {address}"
    return None


def _prechecked(url: str, allowance: Allowance, resolve: bool) -> _ParsedEndpoint | str | None:
    """Everything decidable without DNS: an error, None (fine), or the endpoint to resolve."""
    parsed = _parse(url)
    if isinstance(parsed, str):
        return parsed
    if allowance.allows_host(parsed.host):
        return None
    if parsed.literal is not None:
        return _refusal(parsed.host, [parsed.literal], allowance)
    name = parsed.host.lower().rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return f"endpoint host {parsed.host!r} is this machine"
    return parsed if resolve else None


def _addresses(infos: Iterable[tuple[object, ...]]) -> list[IPAddress]:
    found: list[IPAddress] = []
    for info in infos:
        sockaddr = info[4]
        assert isinstance(sockaddr, tuple)
        # Strip an IPv6 zone ("fe80::1%eth0") which ip_address does not accept.
        found.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
    return found


@dataclass(frozen=True, slots=True)
class ResolvedEndpoint:
    """An endpoint whose name was resolved once and whose address passed the check: connect to
    ``address`` (TLS SNI and Host stay the name), so a second lookup cannot be answered with a
    private address (DNS rebinding)."""

    url: str
    address: str


async def resolve_endpoint(url: str, allowance: Allowance) -> ResolvedEndpoint | str:
    """Resolve once and check: the address to connect to, or why not (for the logs)."""
    parsed = _parse(url)
    if isinstance(parsed, str):
        return parsed
    verdict = _prechecked(url, allowance, resolve=True)
    if isinstance(verdict, str):
        return verdict
    if parsed.literal is not None:
        return ResolvedEndpoint(url, str(parsed.literal))
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"endpoint host {parsed.host!r} does not resolve"
    addresses = _addresses(infos)
    if not addresses:
        return f"endpoint host {parsed.host!r} does not resolve"
    if verdict is not None:  # not an allowed host: every address must pass
        refusal = _refusal(parsed.host, addresses, allowance)
        if refusal is not None:
            return refusal
    return ResolvedEndpoint(url, str(addresses[0]))


def check_endpoint(url: str, allow: Sequence[str], *, resolve: bool = True) -> str | None:
    """Why ``url`` may not be contacted, or None when it may.

    With ``resolve`` every address the host resolves to must be public (or allowed); without it
    (at registration time) only what the URL itself shows is checked.
    """
    allowance = Allowance.parse(allow)
    verdict = _prechecked(url, allowance, resolve)
    if not isinstance(verdict, _ParsedEndpoint):
        return verdict
    try:
        infos = socket.getaddrinfo(verdict.host, verdict.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"endpoint host {verdict.host!r} does not resolve"
    return _refusal(verdict.host, _addresses(infos), allowance)


async def check_endpoint_async(url: str, allowance: Allowance) -> str | None:
    """``check_endpoint`` without blocking the event loop; senders call it before each request."""
    verdict = _prechecked(url, allowance, resolve=True)
    if not isinstance(verdict, _ParsedEndpoint):
        return verdict
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(verdict.host, verdict.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"endpoint host {verdict.host!r} does not resolve"
    return _refusal(verdict.host, _addresses(infos), allowance)


def provider_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """System CAs (``SSL_CERT_FILE`` honoured) plus the operator's extra CA bundle, if any."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


@dataclass(frozen=True, slots=True)
class EndpointResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names


class EndpointUnavailable(Exception):
    """No answer because of the network (connect, TLS, reset, timeout): safe to send again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EndpointClient:
    """POSTs to user-supplied https endpoints, many origins, connections kept per origin.

    HTTP/2 through the project's h2 pool (httpx's HTTP/2 manages only a few hundred requests a
    second); origins that do not offer HTTP/2 (plenty of webhook receivers) fall back to HTTP/1.1
    through httpx. Redirects are never followed: the SSRF guard checked only the first URL.
    """

    def __init__(
        self, ca_file: Path | None, *, timeout: float = 10.0, max_origins: int = 256
    ) -> None:
        self.timeout = timeout
        self._max_origins = max_origins
        self._h2_context = provider_ssl_context(ca_file)
        self._h2_context.set_alpn_protocols(["h2"])
        # One pool per (origin, checked address): a name that now resolves elsewhere gets a new
        # pool, checked again, and never reuses a connection to the old address.
        self._pools: OrderedDict[tuple[str, str], H2Pool] = OrderedDict()
        self._http1_origins: set[str] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._http1 = httpx.AsyncClient(
            http2=False,
            verify=provider_ssl_context(ca_file),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
        )

    async def post(
        self, endpoint: ResolvedEndpoint, headers: Sequence[tuple[str, str]], body: bytes
    ) -> EndpointResponse:
        """POST to the endpoint's checked address; the name is kept for TLS and Host."""
        url = endpoint.url
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._http1_origins:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            try:
                answer = await self._pool(origin, endpoint.address).request(
                    "POST", path, headers, body, time_limit=self.timeout
                )
                return EndpointResponse(answer.status, answer.headers)
            except H2Unavailable as exc:
                if "ALPN" not in exc.reason:
                    raise EndpointUnavailable(exc.reason) from None
                self._http1_origins.add(origin)
                self._forget((origin, endpoint.address))
            except h2.exceptions.ProtocolError as exc:
                raise EndpointUnavailable(f"HTTP/2 protocol error: {exc}") from None
            except OSError as exc:
                raise EndpointUnavailable(f"{type(exc).__name__}: {exc}") from None
        host = parts.hostname or ""
        literal = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
        netloc = f"{literal}:{parts.port}" if parts.port else literal
        pinned = parts._replace(netloc=netloc).geturl()
        try:
            response = await self._http1.post(
                pinned,
                content=body,
                headers=[*headers, ("host", parts.netloc)],
                extensions={"sni_hostname": host},
            )
        except httpx.TimeoutException:
            raise EndpointUnavailable("timeout") from None
        except httpx.HTTPError as exc:
            raise EndpointUnavailable(type(exc).__name__) from None
        return EndpointResponse(response.status_code, dict(response.headers))

    def _pool(self, origin: str, address: str) -> H2Pool:
        key = (origin, address)
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        pool = self._pools[key] = H2Pool(
            origin,
            self._h2_context,
            max_connections=2,
            connect_timeout=self.timeout,
            connect_address=address,
        )
        while len(self._pools) > self._max_origins:
            self._forget(next(iter(self._pools)))
        return pool

    def _forget(self, key: tuple[str, str]) -> None:
        pool = self._pools.pop(key, None)
        if pool is not None:
            task = asyncio.get_running_loop().create_task(pool.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await self._http1.aclose()
