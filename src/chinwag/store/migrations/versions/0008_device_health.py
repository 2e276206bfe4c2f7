"""Device health: test notifications (outbox/deliveries rows without a message), each device's
last success and failure, when it was last registered (refreshed_at, for stale tokens), and a
provider_health row per provider and app.

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refreshed_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("last_success_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("last_failure_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("last_failure_reason", sa.String(length=500), nullable=True))
    # Every device was last registered when it was last updated, at the latest; created_at is
    # the one time sure to be no later than its last registration.
    op.execute("UPDATE devices SET refreshed_at = created_at")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.alter_column("refreshed_at", existing_type=sa.Float(), nullable=False)
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column("message_id", existing_type=Id, nullable=True)
        batch_op.add_column(sa.Column("device_id", Id, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_outbox_device_id_devices"),
            "devices",
            ["device_id"],
            ["id"],
            ondelete="CASCADE",
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column("message_id", existing_type=Id, nullable=True)
    op.create_table(
        "provider_health",
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("last_success_at", sa.Float(), nullable=True),
        sa.Column("last_error_at", sa.Float(), nullable=True),
        sa.Column("last_error_class", sa.String(length=16), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("credentials_ok", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "app", name=op.f("pk_provider_health")),
    )


def downgrade() -> None:
    # Tests are diagnostics, not history: their rows (no message) cannot exist in the old schema.
    op.execute("DELETE FROM deliveries WHERE message_id IS NULL")
    op.execute("DELETE FROM outbox WHERE message_id IS NULL")
    op.drop_table("provider_health")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column("message_id", existing_type=Id, nullable=False)
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_outbox_device_id_devices"), type_="foreignkey")
        batch_op.drop_column("device_id")
        batch_op.alter_column("message_id", existing_type=Id, nullable=False)
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("last_failure_reason")
        batch_op.drop_column("last_failure_at")
        batch_op.drop_column("last_success_at")
        batch_op.drop_column("refreshed_at")
