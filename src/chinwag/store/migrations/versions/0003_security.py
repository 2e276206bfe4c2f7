"""Security: per-user email and webhook devices, email verification, per-device webhook secrets,
token last use (idle expiry).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used_at", sa.Float(), nullable=True))
    # When each existing token was last used is unknown: count from the upgrade, so that
    # upgrading does not sign out everyone whose token is older than CHINWAG_TOKEN_IDLE_DAYS.
    op.execute(sa.text("UPDATE api_tokens SET last_used_at = :now").bindparams(now=time.time()))

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scope", Id, server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("verified", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.add_column(sa.Column("webhook_secret", sa.String(length=128), nullable=True))
        batch_op.drop_constraint(batch_op.f("uq_devices_platform_app_token_hash"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_devices_platform_app_token_hash_scope"),
            ["platform", "app", "token_hash", "scope"],
        )
    # Email and webhook addresses become per user; existing ones stay verified.
    op.execute("UPDATE devices SET scope = user_id WHERE platform IN ('email', 'webhook')")

    op.create_table(
        "device_verifications",
        sa.Column("device_id", Id, nullable=False),
        sa.Column("code", sa.String(length=16), nullable=True),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("wrong_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("send_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_verifications_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_verifications")),
    )
    with op.batch_alter_table("device_verifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_device_verifications_status_next_attempt_at",
            ["status", "next_attempt_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("device_verifications", schema=None) as batch_op:
        batch_op.drop_index("ix_device_verifications_status_next_attempt_at")
    op.drop_table("device_verifications")

    # Two users' devices for one address would collide under the old global uniqueness: keep
    # the oldest of each, as the old schema could hold only one.
    op.execute(
        "DELETE FROM devices WHERE scope <> 0 AND id NOT IN ("
        "SELECT MIN(id) FROM devices GROUP BY platform, app, token_hash)"
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("uq_devices_platform_app_token_hash_scope"), type_="unique"
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_devices_platform_app_token_hash"), ["platform", "app", "token_hash"]
        )
        batch_op.drop_column("webhook_secret")
        batch_op.drop_column("verified")
        batch_op.drop_column("scope")

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
