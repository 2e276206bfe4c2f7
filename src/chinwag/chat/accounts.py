"""Users and API tokens: argon2 password hashes, random tokens stored only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from chinwag.chat import events
from chinwag.chat.errors import Conflict, InvalidInput, Overloaded, Unauthorized
from chinwag.chat.models import User
from chinwag.store.database import Database
from chinwag.store.schema import api_tokens, users

USERNAME_PATTERN = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,31}$")
TOKEN_PREFIX = "cw_"  # a visible prefix helps secret scanners find leaked tokens

_hasher = PasswordHasher()
# Each argon2 hash holds 64 MiB for ~0.1 s. Unbounded, 32 concurrent sign-ups took a web process
# from 93 MB to 898 MB and /healthz to seconds; so at most this many run at once per process,
# and a request that cannot get a slot within HASH_WAIT_SECONDS is told to come back (503).
MAX_CONCURRENT_HASHES = 2
HASH_WAIT_SECONDS = 2.0
_hash_slots = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)
# last_used_at is written at most this often per token: a cheap record, not a write per request.
LAST_USE_RESOLUTION_SECONDS = 3600.0
# Verified when the username is unknown, so a failed sign-in takes as long either way and does not
# reveal which usernames exist.
_DUMMY_HASH = _hasher.hash("chinwag-dummy-password")


def normalize_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            "username must be 1-32 characters: letters, digits, '_', '.', '-'",
            field="username",
        )
    return name


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def user_from_row(row: RowMapping) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        is_admin=bool(row["is_admin"]),
        created_at=row["created_at"],
    )


@contextmanager
def _hash_slot() -> Iterator[None]:
    if not _hash_slots.acquire(timeout=HASH_WAIT_SECONDS):
        raise Overloaded("too many sign-ins at once; try again in a moment", retry_after=1)
    try:
        yield
    finally:
        _hash_slots.release()


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise InvalidInput("password must be at least 8 characters", field="password")
    with _hash_slot():
        return _hasher.hash(password)


def create_user(db: Database, username: str, password: str, display_name: str | None) -> User:
    name = normalize_username(username)
    password_hash = hash_password(password)  # slow on purpose: outside the transaction
    now = time.time()
    try:
        return _insert_user(db, name, display_name, password_hash, now)
    except IntegrityError:
        # Two sign-ups for one name at once (PostgreSQL lets them overlap): the other one won.
        raise Conflict(f"username {name!r} is taken", field="username") from None


def _insert_user(
    db: Database, name: str, display_name: str | None, password_hash: str, now: float
) -> User:
    with db.write() as conn:
        if conn.execute(sa.select(users.c.id).where(users.c.username == name)).first():
            raise Conflict(f"username {name!r} is taken", field="username")
        user_id = conn.execute(
            users.insert()
            .returning(users.c.id)
            .values(
                username=name,
                display_name=(display_name or name).strip() or name,
                password_hash=password_hash,
                is_admin=False,
                created_at=now,
            )
        ).scalar_one()
        row = conn.execute(sa.select(users).where(users.c.id == user_id)).mappings().one()
    return user_from_row(row)


def issue_token(db: Database, username: str, password: str) -> tuple[str, User]:
    """Check the password and return a new token; the token is shown this once only."""
    try:
        name = normalize_username(username)
    except InvalidInput:
        name = ""
    with db.read() as conn:
        row = conn.execute(sa.select(users).where(users.c.username == name)).mappings().first()
    if row is None:
        _verify(_DUMMY_HASH, password)
        raise Unauthorized("wrong username or password")
    if not _verify(row["password_hash"], password):
        raise Unauthorized("wrong username or password")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    with db.write() as conn:
        conn.execute(
            api_tokens.insert().values(
                user_id=row["id"], token_hash=token_digest(token), created_at=now, last_used_at=now
            )
        )
    return token, user_from_row(row)


@dataclass(frozen=True, slots=True)
class Session:
    """A user signed in with one token; ``token_id`` names that token (to sign it out)."""

    user: User
    token_id: int


def authenticate(db: Database, token: str, *, idle_seconds: float = 0.0) -> User:
    return authenticate_token(db, token, idle_seconds=idle_seconds).user


# Built once: every API request runs it.
_SESSION_OF_TOKEN = (
    sa.select(
        users,
        api_tokens.c.id.label("token_id"),
        api_tokens.c.created_at.label("token_created_at"),
        api_tokens.c.last_used_at,
    )
    .join(api_tokens, api_tokens.c.user_id == users.c.id)
    .where(api_tokens.c.token_hash == sa.bindparam("digest"))
)


def authenticate_token(db: Database, token: str, *, idle_seconds: float = 0.0) -> Session:
    """The session of a valid token. A token unused for ``idle_seconds`` (0: never) expires."""
    now = time.time()
    with db.read_statement() as conn:
        row = conn.execute(_SESSION_OF_TOKEN, {"digest": token_digest(token)}).mappings().first()
    if row is None:
        raise Unauthorized("invalid or revoked token")
    last_used = row["last_used_at"] or row["token_created_at"]
    if idle_seconds > 0 and now - last_used > idle_seconds:
        with db.write() as conn:
            conn.execute(api_tokens.delete().where(api_tokens.c.id == row["token_id"]))
            events.sessions_ended(conn, row["id"], [row["token_id"]])
        raise Unauthorized("token expired after a long time unused; sign in again")
    if now - last_used >= LAST_USE_RESOLUTION_SECONDS:
        with db.write() as conn:
            conn.execute(
                api_tokens.update()
                .where(api_tokens.c.id == row["token_id"])
                .values(last_used_at=now)
            )
    return Session(user_from_row(row), row["token_id"])


def revoke_token(db: Database, session: Session) -> None:
    """Sign out: the token stops working at once, and the live streams opened with it close."""
    with db.write() as conn:
        conn.execute(api_tokens.delete().where(api_tokens.c.id == session.token_id))
        events.sessions_ended(conn, session.user.id, [session.token_id])


def change_password(db: Database, session: Session, old_password: str, new_password: str) -> int:
    """Set a new password after checking the old one; every other token of the user is revoked
    (a thief's included). Returns how many were."""
    with db.read() as conn:
        current = conn.execute(
            sa.select(users.c.password_hash).where(users.c.id == session.user.id)
        ).scalar_one()
    if not _verify(current, old_password):
        raise InvalidInput("old_password is wrong", field="old_password")
    new_hash = hash_password(new_password)
    with db.write() as conn:
        conn.execute(
            users.update().where(users.c.id == session.user.id).values(password_hash=new_hash)
        )
        revoked = (
            conn.execute(
                api_tokens.delete()
                .where(api_tokens.c.user_id == session.user.id, api_tokens.c.id != session.token_id)
                .returning(api_tokens.c.id)
            )
            .scalars()
            .all()
        )
        events.sessions_ended(conn, session.user.id, revoked)
    return len(revoked)


def set_admin(db: Database, username: str, is_admin: bool) -> User:
    name = normalize_username(username)
    with db.write() as conn:
        updated = conn.execute(
            users.update().where(users.c.username == name).values(is_admin=is_admin)
        ).rowcount
        if not updated:
            raise InvalidInput(f"no user {name!r}", field="username")
        row = conn.execute(sa.select(users).where(users.c.username == name)).mappings().one()
    return user_from_row(row)


def users_by_name(conn: Connection, usernames: list[str]) -> dict[str, int]:
    """Map normalized usernames to ids; unknown names are simply absent."""
    if not usernames:
        return {}
    rows = conn.execute(
        sa.select(users.c.username, users.c.id).where(users.c.username.in_(usernames))
    )
    return {row.username: row.id for row in rows}


def _verify(password_hash: str, password: str) -> bool:
    with _hash_slot():
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
