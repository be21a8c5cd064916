"""Metriport's rate limits as one shared schedule of start calls per operation.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_schedule",
        sa.Column("operation", sa.String(64), primary_key=True),
        sa.Column("per_window", sa.Integer(), nullable=False),
        sa.Column("window_seconds", sa.Float(), nullable=False),
        sa.Column("margin_seconds", sa.Float(), nullable=False),
        sa.Column("recent", sa.JSON(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("call_schedule")
