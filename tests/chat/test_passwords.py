"""Password storage in the domain, at the production argon2 cost."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from argon2 import extract_parameters

from chinwag.chat import accounts
from chinwag.chat.errors import Unauthorized
from chinwag.store.database import Database
from chinwag.store.schema import users

pytestmark = pytest.mark.full_password_cost


def test_passwords_are_hashed_with_argon2id_at_full_cost(db: Database) -> None:
    """A new user's password is stored as argon2id with at least 64 MiB and 3 passes."""
    accounts.create_user(db, "alice", "correct horse", None)
    with db.read() as conn:
        stored = conn.execute(sa.select(users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$")
    parameters = extract_parameters(stored)
    assert parameters.memory_cost >= 64 * 1024 and parameters.time_cost >= 3
    assert "correct horse" not in stored


def test_sign_in_checks_the_password(db: Database) -> None:
    """The right password issues a token; a wrong one is refused like an unknown user."""
    accounts.create_user(db, "alice", "correct horse", None)
    token, user = accounts.issue_token(db, "alice", "correct horse")
    assert user.username == "alice"
    assert accounts.authenticate(db, token) == user
    with pytest.raises(Unauthorized) as wrong:
        accounts.issue_token(db, "alice", "wrong horse")
    with pytest.raises(Unauthorized) as unknown:
        accounts.issue_token(db, "nobody", "correct horse")
    assert wrong.value.message == unknown.value.message
