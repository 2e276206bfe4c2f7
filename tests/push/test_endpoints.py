"""The SSRF guard on user-supplied endpoints (Web Push subscriptions, webhook URLs)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from chinwag.push.endpoints import Allowance, check_endpoint, check_endpoint_async, is_public


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://127.8.9.10:8443/hook",
        "https://10.1.2.3/",
        "https://172.16.0.1/",
        "https://192.168.1.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/",
        "https://[fe80::1]/",
        "https://[fc00::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://0.0.0.0/",
        "https://224.0.0.1/",
        "https://240.0.0.1/",
        "https://100.64.0.1/",
        "https://localhost/",
        "https://api.localhost/",
    ],
)
def test_non_public_addresses_are_refused(url: str) -> None:
    """Loopback, private, link-local, multicast, reserved, unspecified and CGNAT are refused."""
    assert check_endpoint(url, ()) is not None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://93.184.216.34/", "https"),
        ("ftp://93.184.216.34/", "https"),
        ("https:///nohost", "no host"),
        ("https://user:pw@93.184.216.34/", "credentials"),
        ("https://93.184.216.34:99999/", "valid URL"),
    ],
)
def test_malformed_or_plain_http_urls_are_refused(url: str, why: str) -> None:
    """Only https URLs with a host (and no embedded credentials) may be endpoints."""
    error = check_endpoint(url, ())
    assert error is not None and why in error


def test_public_address_is_allowed() -> None:
    """A public literal address passes without any allowance."""
    assert check_endpoint("https://93.184.216.34/push/abc", ()) is None


def test_cidr_allowance_admits_only_its_network() -> None:
    """An allowed CIDR opens exactly that network, nothing beside it."""
    allow = ["127.0.0.1/32", "10.0.0.0/8"]
    assert check_endpoint("https://127.0.0.1:8443/hook", allow) is None
    assert check_endpoint("https://10.200.0.5/hook", allow) is None
    assert check_endpoint("https://127.0.0.2/hook", allow) is not None
    assert check_endpoint("https://192.168.0.1/hook", allow) is not None


def test_host_name_allowance_admits_that_name() -> None:
    """An allowed host name is admitted whatever it resolves to (case and trailing dot ignored)."""
    assert check_endpoint("https://LocalHost./hook", ["localhost"]) is None


def test_resolution_checks_every_address() -> None:
    """A name resolving to a private address is refused; its address's CIDR admits it."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 443)}
    except OSError:
        pytest.skip("this machine's name does not resolve")
    if any(is_public(ipaddress.ip_address(a)) for a in addresses):
        pytest.skip("this machine's name resolves to a public address")
    assert check_endpoint(f"https://{name}/hook", ()) is not None
    assert check_endpoint(f"https://{name}/hook", ["0.0.0.0/0", "::/0"]) is None


def test_unresolvable_name_is_refused_but_passes_without_resolution() -> None:
    """At registration (resolve=False) a name is not looked up; at send time it must resolve."""
    url = "https://push.nonexistent.invalid/abc"
    error = check_endpoint(url, ())
    assert error is not None and "does not resolve" in error
    assert check_endpoint(url, (), resolve=False) is None
    assert check_endpoint("https://127.0.0.1/", (), resolve=False) is not None


def test_async_check_matches_sync_check() -> None:
    """The senders' non-blocking check gives the same verdicts as the synchronous one."""

    async def verdicts() -> list[str | None]:
        allowance = Allowance.parse(["127.0.0.1/32"])
        return [
            await check_endpoint_async("https://127.0.0.1:1/x", allowance),
            await check_endpoint_async("https://10.0.0.1/x", allowance),
            await check_endpoint_async("https://localhost/x", allowance),
            await check_endpoint_async("https://x.nonexistent.invalid/", allowance),
        ]

    allowed, private, local, unresolvable = asyncio.run(verdicts())
    assert allowed is None
    assert private is not None and local is not None and unresolvable is not None
