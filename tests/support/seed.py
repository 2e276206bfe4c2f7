"""Users, chats, members, devices and API tokens written straight into the store, for tests and
benchmarks that need many of them (argon2 and an HTTP round trip per row would take minutes).

Rows are what the product itself would write: device tokens in their canonical form, keyed by
``chat.devices.token_hash`` in the device's scope; API tokens stored as ``accounts.token_digest``.
Registration and sign-in themselves are tested through the API (tests/web).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from chinwag.chat.accounts import TOKEN_PREFIX, token_digest
from chinwag.chat.devices import device_scope, normalize_token, token_hash
from chinwag.push.model import Platform
from chinwag.store.database import Database
from chinwag.store.schema import api_tokens, chats, devices, memberships, users

BATCH = 1000


def add_users(db: Database, usernames: Sequence[str]) -> list[int]:
    """Accounts that cannot sign in (no password hash); returns their ids, in order."""
    now = time.time()
    with db.write() as conn:
        first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(users.c.id), 0))).scalar_one()
        ids = [first + 1 + i for i in range(len(usernames))]
        rows = [
            {
                "id": user_id,
                "username": name,
                "display_name": name.title(),
                "password_hash": "-",
                "created_at": now,
            }
            for user_id, name in zip(ids, usernames, strict=True)
        ]
        for batch in _batches(rows):
            conn.execute(users.insert(), batch)
        if db.is_postgres and ids:
            # Explicit ids bypass the sequence; move it past them so later API sign-ups work.
            conn.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('users', 'id'), :top)"),
                {"top": ids[-1]},
            )
    return ids


def add_api_tokens(db: Database, user_ids: Sequence[int]) -> list[str]:
    """One bearer token per user, stored as sign-in stores it; returns the tokens, in order."""
    now = time.time()
    tokens = [TOKEN_PREFIX + secrets.token_urlsafe(32) for _ in user_ids]
    rows = [
        {"user_id": user_id, "token_hash": token_digest(token), "created_at": now}
        for user_id, token in zip(user_ids, tokens, strict=True)
    ]
    with db.write() as conn:
        for batch in _batches(rows):
            conn.execute(api_tokens.insert(), batch)
    return tokens


def add_chat(db: Database, title: str, creator_id: int) -> int:
    """A chat with no members yet (``add_members`` adds them, the creator included)."""
    with db.write() as conn:
        chat_id: int = conn.execute(
            chats.insert()
            .returning(chats.c.id)
            .values(title=title, created_by=creator_id, created_at=time.time())
        ).scalar_one()
    return chat_id


def add_members(db: Database, chat_id: int, user_ids: Iterable[int]) -> None:
    now = time.time()
    rows = [{"chat_id": chat_id, "user_id": user_id, "joined_at": now} for user_id in user_ids]
    with db.write() as conn:
        for batch in _batches(rows):
            conn.execute(memberships.insert(), batch)


def add_devices(
    db: Database, user_id: int, platform: str, tokens: Iterable[str], app: str = "default"
) -> None:
    """Active, verified devices of one user, as registration would store them."""
    add_devices_of(db, [(user_id, token) for token in tokens], platform, app)


def add_devices_of(
    db: Database, owned: Iterable[tuple[int, str]], platform: str, app: str = "default"
) -> None:
    """Active, verified devices, one per (user id, token)."""
    kind = Platform(platform)
    now = time.time()
    rows: list[dict[str, Any]] = []
    for user_id, token in owned:
        canonical = normalize_token(kind, token, allow_private=("0.0.0.0/0", "::/0"))
        rows.append(
            {
                "user_id": user_id,
                "platform": kind.value,
                "app": app,
                "token": canonical,
                "token_hash": token_hash(canonical),
                "scope": device_scope(kind, user_id),
                "active": True,
                "verified": True,
                "created_at": now,
                "updated_at": now,
                "refreshed_at": now,
            }
        )
    with db.write() as conn:
        for batch in _batches(rows):
            conn.execute(devices.insert(), batch)


def _batches(rows: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]
