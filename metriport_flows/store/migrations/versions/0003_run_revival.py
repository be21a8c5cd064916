"""Crashed runs brought back by the reconciler: one row per run, counting its revivals.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_revival",
        sa.Column("flow_run_id", sa.String(64), primary_key=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_revived_at", sa.DateTime(), nullable=True),
        sa.Column("last_crash_at", sa.DateTime(), nullable=True),
        sa.Column("last_reason", sa.String(500), nullable=True),
        sa.Column("given_up_at", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("run_revival")
