"""Outbox kinds: clear and removal updates are fan-outs of the engine, asked for through the
outbox like a message's alerts, instead of delivery rows the chat layer wrote itself.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Existing rows are the alerts of their messages, for every recipient: the defaults.
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), server_default="alert", nullable=False)
        )
        batch_op.add_column(sa.Column("user_id", Id, server_default="0", nullable=False))
        batch_op.drop_constraint(batch_op.f("uq_outbox_message_id"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_outbox_message_id_kind_user_id"), ["message_id", "kind", "user_id"]
        )


def downgrade() -> None:
    # The old schema holds one outbox row per message: only the alerts can stay. Clear and
    # removal rows still pending are lost (their updates are silent and best effort).
    op.execute("DELETE FROM outbox WHERE kind <> 'alert'")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_outbox_message_id_kind_user_id"), type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_outbox_message_id"), ["message_id"])
        batch_op.drop_column("user_id")
        batch_op.drop_column("kind")
