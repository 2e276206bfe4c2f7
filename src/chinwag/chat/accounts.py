"""Users and API tokens: argon2 password hashes, random tokens stored only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import re
import secrets
import time

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from chinwag.chat.errors import Conflict, InvalidInput, Unauthorized
from chinwag.chat.models import User
from chinwag.store.database import Database
from chinwag.store.schema import api_tokens, users

USERNAME_PATTERN = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,31}$")
TOKEN_PREFIX = "cw_"  # a visible prefix helps secret scanners find leaked tokens

_hasher = PasswordHasher()
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


def create_user(db: Database, username: str, password: str, display_name: str | None) -> User:
    name = normalize_username(username)
    if len(password) < 8:
        raise InvalidInput("password must be at least 8 characters", field="password")
    password_hash = _hasher.hash(password)  # slow on purpose: outside the transaction
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
    with db.write() as conn:
        conn.execute(
            api_tokens.insert().values(
                user_id=row["id"], token_hash=token_digest(token), created_at=time.time()
            )
        )
    return token, user_from_row(row)


def authenticate(db: Database, token: str) -> User:
    with db.read() as conn:
        row = (
            conn.execute(
                sa.select(users)
                .join(api_tokens, api_tokens.c.user_id == users.c.id)
                .where(api_tokens.c.token_hash == token_digest(token))
            )
            .mappings()
            .first()
        )
    if row is None:
        raise Unauthorized("invalid or revoked token")
    return user_from_row(row)


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
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
