"""Device payloads: what a device lets the provider see (full, minimal, encrypted) and, for
encrypted devices, their AES-256-GCM key.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every existing device keeps getting what it got: the full notification.
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("payload", sa.String(length=16), server_default="full", nullable=False)
        )
        batch_op.add_column(sa.Column("encryption_key", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # The old schema sends everyone the full text: a device that asked for less would get it.
    # Deactivate those devices rather than reveal to their provider what they chose to hide.
    op.execute(
        "UPDATE devices SET active = false, deactivated_reason = 'payload mode dropped by "
        "downgrade' WHERE payload <> 'full'"
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("encryption_key")
        batch_op.drop_column("payload")
