"""Inbox messages, waits and heartbeats.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_message",
        sa.Column("message_id", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=True),
        sa.Column("patient_id", sa.String(200), nullable=True),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("stage", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("wait_id", sa.String(64), nullable=True),
        sa.Column("detail", sa.String(500), nullable=True),
    )
    op.create_index("ix_inbox_message_request_id", "inbox_message", ["request_id"])
    op.create_index("ix_inbox_message_status_next", "inbox_message", ["status", "next_attempt_at"])
    op.create_index("ix_inbox_message_patient_status", "inbox_message", ["patient_id", "status"])

    op.create_table(
        "wait",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("flow_run_id", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(200), nullable=True),
        sa.Column("request_id", sa.String(200), nullable=True),
        sa.Column("pause_key", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("soft_deadline", sa.DateTime(), nullable=False),
        sa.Column("hard_deadline", sa.DateTime(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("consumed_at", sa.DateTime(), nullable=True),
        sa.Column("delivery_attempts", sa.Integer(), nullable=False),
        sa.Column("next_delivery_at", sa.DateTime(), nullable=True),
        sa.Column("last_delivery_error", sa.String(500), nullable=True),
        sa.UniqueConstraint("flow_run_id", "stage", "attempt", name="uq_wait_run_stage_attempt"),
    )
    op.create_index("ix_wait_flow_run_id", "wait", ["flow_run_id"])
    op.create_index("ix_wait_request_id", "wait", ["request_id"])
    op.create_index("ix_wait_status", "wait", ["status"])
    op.create_index("ix_wait_patient_stage", "wait", ["patient_id", "stage"])

    op.create_table(
        "heartbeat",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("heartbeat")
    op.drop_table("wait")
    op.drop_table("inbox_message")
