"""Email verification: a new email device gets a code by email and nothing else until its owner
sends the code back, so nobody can have chinwag mail an address that is not theirs.

The code is written with the device; the worker mails it once through the SMTP sender
(``chinwag.fanout.verification``) and clears it, keeping only its digest. Wrong answers are
counted: after ``MAX_WRONG_CODES`` the code is dead, and registering the address again (at most
once per ``RESEND_AFTER_SECONDS``) mails a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chinwag.chat.errors import Forbidden, InvalidInput, NotFound
from chinwag.chat.models import User
from chinwag.store.database import Database
from chinwag.store.schema import device_verifications, devices
from chinwag.store.states import VerificationStatus

CODE_DIGITS = 6
MAX_WRONG_CODES = 5
RESEND_AFTER_SECONDS = 3600.0


def _digest(device_id: int, code: str) -> str:
    return hashlib.sha256(f"{device_id}:{code}".encode()).hexdigest()


def _new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def issue_code(conn: Connection, device_id: int, now: float) -> None:
    """A fresh code for the device, due to be mailed at once (inside the caller's transaction)."""
    code = _new_code()
    values = {
        "code": code,
        "code_hash": _digest(device_id, code),
        "wrong_attempts": 0,
        "status": VerificationStatus.PENDING.value,
        "send_attempts": 0,
        "last_error": None,
        "next_attempt_at": now,
        "lease_until": None,
        "lease_owner": None,
        "created_at": now,
        "sent_at": None,
    }
    conn.execute(device_verifications.delete().where(device_verifications.c.device_id == device_id))
    conn.execute(device_verifications.insert().values(device_id=device_id, **values))


def renew_code(conn: Connection, device_id: int, now: float) -> None:
    """An unverified device registered again: a new code only if the last one is spent or old,
    so re-registering cannot make chinwag mail an address over and over."""
    row = conn.execute(
        sa.select(device_verifications.c.created_at, device_verifications.c.wrong_attempts).where(
            device_verifications.c.device_id == device_id
        )
    ).first()
    if (
        row is None
        or row.wrong_attempts >= MAX_WRONG_CODES
        or now - row.created_at >= RESEND_AFTER_SECONDS
    ):
        issue_code(conn, device_id, now)


def verify_device(db: Database, user: User, device_id: int, code: str) -> None:
    """Mark the device verified when ``code`` is right; count a wrong one."""
    now = time.time()
    with db.write() as conn:
        device = conn.execute(
            sa.select(devices.c.verified).where(
                devices.c.id == device_id,
                devices.c.user_id == user.id,
                devices.c.active.is_(True),
            )
        ).first()
        if device is None:
            raise NotFound(f"no device {device_id}")
        if device.verified:
            return
        row = conn.execute(
            sa.select(device_verifications).where(device_verifications.c.device_id == device_id)
        ).first()
        if row is None or row.wrong_attempts >= MAX_WRONG_CODES:
            refusal: Exception | None = Forbidden(
                "too many wrong codes; remove the device and add it again for a new code"
            )
        elif hmac.compare_digest(row.code_hash, _digest(device_id, code.strip())):
            conn.execute(
                devices.update()
                .where(devices.c.id == device_id)
                .values(verified=True, updated_at=now)
            )
            conn.execute(
                device_verifications.delete().where(device_verifications.c.device_id == device_id)
            )
            refusal = None
        else:
            conn.execute(
                device_verifications.update()
                .where(device_verifications.c.device_id == device_id)
                .values(wrong_attempts=device_verifications.c.wrong_attempts + 1)
            )
            left = MAX_WRONG_CODES - row.wrong_attempts - 1
            refusal = InvalidInput(f"wrong code ({left} tries left)", field="code")
    # Raised after the commit: the wrong attempt must stay counted.
    if refusal is not None:
        raise refusal
