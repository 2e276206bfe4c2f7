"""Fixtures of the live tests: gateways with other settings, and cheap password hashing (they sign
up many users), as in the API tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.conftest import LiveGateway, gateway_settings
from tests.web.conftest import quick_password_hashing

from chinwag.store.database import Database
from chinwag.web import Services

__all__ = ["quick_password_hashing"]


@pytest.fixture
def start_gateway(db: Database) -> Iterator[Callable[..., LiveGateway]]:
    """Start a gateway on the test's database with some settings changed; stopped afterwards.
    Two of them are two gateway processes' worth of hub, listener and port."""
    started: list[LiveGateway] = []

    def start(**overrides: Any) -> LiveGateway:
        gateway = LiveGateway(Services(gateway_settings(db, **overrides), db))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
