"""The API tests create many users: hash their passwords with argon2id at its cheapest cost.

It is the same algorithm and code path, so what is stored still reads ``$argon2id$``; only the
work factor drops from ~0.2 s to ~0.1 ms per hash. tests/chat/test_passwords.py checks the
production cost.
"""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, profiles

from chinwag.chat import accounts

QUICK_HASHER = PasswordHasher.from_parameters(profiles.CHEAPEST)


@pytest.fixture(autouse=True)
def quick_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "_hasher", QUICK_HASHER)
