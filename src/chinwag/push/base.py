"""What every sender has in common: one keyword-only constructor shape and one base class.

``SomeSender(settings=<that provider's settings>, network=Network(...))`` builds any of the five;
a sender may add keyword-only extras with defaults for what tests inject (APNs: ``tokens``).
A sender does not bound its own concurrency: the registry does, per provider
(``chinwag.push.slots``), and so does whoever calls a sender directly (the benchmarks).
"""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from chinwag.push.model import DeviceTarget, Notification, Outcome, Platform

SettingsT = TypeVar("SettingsT")


@dataclass(frozen=True, slots=True)
class Network:
    """How a sender reaches its provider: the same knobs for every sender."""

    ca_file: Path | None = None  # extra CA bundle (CHINWAG_CA_FILE)
    timeout: float = 10.0  # connect, and wait for one answer
    # Hosts or CIDRs a user-supplied endpoint (webhook, Web Push) may reach although private
    # (CHINWAG_ALLOW_PRIVATE_ENDPOINTS).
    allow_private: tuple[str, ...] = ()
    max_connections: int = 2  # HTTP/2 connections per origin


DEFAULT_NETWORK = Network()


def provider_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """System CAs (``SSL_CERT_FILE`` honoured) plus the operator's extra CA bundle, if any."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class BaseSender(ABC, Generic[SettingsT]):
    """One provider (``chinwag.push.model.Sender``); ``send`` never raises for the provider or
    the network: every failure is an outcome (``chinwag.push.outcome``)."""

    platform: Platform

    def __init__(self, *, settings: SettingsT, network: Network = DEFAULT_NETWORK) -> None:
        self.settings = settings
        self.network = network

    @property
    def timeout(self) -> float:
        return self.network.timeout

    @abstractmethod
    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome: ...

    async def aclose(self) -> None:
        return None
