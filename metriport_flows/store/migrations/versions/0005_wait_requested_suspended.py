"""When a wait's start call was answered and when its run suspended (reply times, slot hold times), and
an index to read a stage's latest replies.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("wait") as batch:
        batch.add_column(sa.Column("requested_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("suspended_at", sa.DateTime(), nullable=True))
    op.create_index("ix_wait_stage_resolved", "wait", ["stage", "resolved_at"])


def downgrade() -> None:
    op.drop_index("ix_wait_stage_resolved", table_name="wait")
    with op.batch_alter_table("wait") as batch:
        batch.drop_column("suspended_at")
        batch.drop_column("requested_at")
