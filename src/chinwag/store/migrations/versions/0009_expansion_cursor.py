"""The expansion's cursor gains the user id: outbox.expanded_user_id, beside expanded_through.

An alert's expansion walks the chat's members by user id and each one's devices by id, so that
each batch seeks its start in an index instead of reading and sorting the whole group. A clear
(one user's devices, still in device id order) resumes where it was. An alert caught
half-expanded by the upgrade (its cursor a bare device id) starts again from the first member:
the rows it had written are kept, and ``ON CONFLICT DO NOTHING`` skips them, so no device gets a
second delivery. Removals keep walking by device id.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expanded_user_id", Id, server_default="0", nullable=False))
    op.execute(
        "UPDATE outbox SET expanded_user_id = user_id WHERE kind = 'clear' AND expanded_through > 0"
    )


def downgrade() -> None:
    # An alert's expanded_through alone would read as "every device up to this id", which a
    # half-expanded alert's is not: it starts again (its rows are kept; duplicates are skipped).
    op.execute(
        "UPDATE outbox SET expanded_through = 0 "
        "WHERE state = 'pending' AND kind = 'alert' AND expanded_through > 0"
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("expanded_user_id")
