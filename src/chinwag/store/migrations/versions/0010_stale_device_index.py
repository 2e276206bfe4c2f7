"""An index for the hourly pruning of stale devices: devices (active, refreshed_at).

``deactivate_stale`` updates the active devices not registered again since a cutoff. Without an
index it read the whole devices table inside a write transaction, once an hour, holding SQLite's
one write lock (every send waits for it) for as long as the scan took; with the index it reads
only the devices it deactivates.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_devices_active_refreshed_at", "devices", ["active", "refreshed_at"])


def downgrade() -> None:
    op.drop_index("ix_devices_active_refreshed_at", table_name="devices")
