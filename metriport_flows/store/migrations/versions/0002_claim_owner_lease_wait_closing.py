"""Claims get an owner and a lease the worker extends; a wait's delivery is held by one deliverer at a
time; waits record why a check failed and when they were abandoned.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_message") as table:
        table.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))
        table.add_column(sa.Column("lease_until", sa.DateTime(), nullable=True))
    op.create_index("ix_inbox_message_status_lease", "inbox_message", ["status", "lease_until"])
    with op.batch_alter_table("wait") as table:
        table.add_column(sa.Column("last_check_error", sa.String(500), nullable=True))
        table.add_column(sa.Column("abandoned_at", sa.DateTime(), nullable=True))
        table.add_column(sa.Column("delivering_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wait") as table:
        table.drop_column("delivering_until")
        table.drop_column("abandoned_at")
        table.drop_column("last_check_error")
    op.drop_index("ix_inbox_message_status_lease", table_name="inbox_message")
    with op.batch_alter_table("inbox_message") as table:
        table.drop_column("lease_until")
        table.drop_column("claimed_by")
