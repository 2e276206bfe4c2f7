"""Quiet hours: a user's window ("HH:MM" start and end in an IANA zone) in which phone and browser
alerts are deferred to its end, and whether mentions break through it. Deferred deliveries need
no column: their status is "deferred" and next_attempt_at says when they go.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, not a batch: on SQLite a batch rebuilds the table, which the
    # foreign keys of every other table refuse once users exist.
    op.add_column("users", sa.Column("quiet_start", sa.String(length=5), nullable=True))
    op.add_column("users", sa.Column("quiet_end", sa.String(length=5), nullable=True))
    op.add_column("users", sa.Column("quiet_timezone", sa.String(length=64), nullable=True))
    op.add_column(
        "users",
        sa.Column(
            "mentions_break_through", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
    )


def downgrade() -> None:
    # The old code knows no "deferred" status: what waits for a window's end goes now instead.
    op.execute("UPDATE deliveries SET status = 'pending' WHERE status = 'deferred'")
    # SQLite has had DROP COLUMN since 3.35 (2021); alembic would rebuild the table instead.
    for column in ("mentions_break_through", "quiet_timezone", "quiet_end", "quiet_start"):
        op.execute(f"ALTER TABLE users DROP COLUMN {column}")
