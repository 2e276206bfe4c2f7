"""Who is asking: the client's address, believing ``X-Forwarded-For`` only from trusted proxies,
and the unit rate limits count it in (one IPv4 address, or one IPv6 /64)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=16)
def trusted_networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """``CHINWAG_TRUSTED_PROXIES`` parsed; an entry that is not an address or CIDR is an error."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def _address(text: str) -> IPAddress | None:
    text = text.strip().strip("[]")
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(environ: Mapping[str, Any], trusted: Iterable[IPNetwork]) -> str:
    """The connection's address, or, when that is a trusted proxy, the address the proxies
    saw: ``X-Forwarded-For`` read from the right, skipping trusted hops. Clients can write
    anything into the header, so only what trusted proxies appended is believed."""
    networks = tuple(trusted)
    remote = _address(str(environ.get("REMOTE_ADDR") or ""))
    if remote is None:
        return "unknown"
    if not networks or not _is_trusted(remote, networks):
        return str(remote)
    forwarded = str(environ.get("HTTP_X_FORWARDED_FOR") or "")
    hops = [hop for hop in (part.strip() for part in forwarded.split(",")) if hop]
    client = remote
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage the proxies did not write: stop at the last hop we believe
        client = address
        if not _is_trusted(address, networks):
            break
    return str(client)


def _is_trusted(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def rate_subject(address: str) -> str:
    """The unit an address is counted in: one IPv6 host commonly holds a whole /64, so a limit
    per full IPv6 address would be a limit per 2**64 addresses."""
    parsed = _address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed) if parsed is not None else address
