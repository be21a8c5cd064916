"""The inbox and the waits: the two tables that make "no webhook is ever lost" hold.

Every verified webhook is an `InboxMessage` row keyed by Metriport's messageId (a duplicate is a no-op).
Every place a flow run waits for Metriport is a `Wait` row keyed by (flow run, stage, attempt); the
dispatcher resolves it with the stage's typed result and delivers it to the run. Timestamps are stored
as naive UTC (SQLite has no time zones) and always come back timezone-aware.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from metriport_flows.domain.stages import RESULT_MODELS, Stage, StageResult


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every dialect."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class MessageStatus(StrEnum):
    pending = "pending"  # received, not yet dispatched
    claimed = "claimed"  # its owner is working on it and extends its lease; reclaimed only once it expires
    unmatched = "unmatched"  # no wait yet: re-checked with backoff, woken by register_wait
    error = "error"  # a handler failed: retried with backoff
    orphan = "orphan"  # unmatched for longer than the hard deadline: kept, replayable, not retried
    rejected = "rejected"  # signed, but not a message the inbox can hold (kept for ops, never dispatched)
    done = "done"


RETRYABLE_MESSAGE_STATUSES = (MessageStatus.pending, MessageStatus.unmatched, MessageStatus.error)


class WaitStatus(StrEnum):
    open = "open"  # nothing has resolved it yet
    resolved = "resolved"  # a result is stored; not yet delivered to the run
    delivered = "delivered"  # the suspended run was resumed with the result
    consumed = "consumed"  # the run read the result itself while still running
    abandoned = "abandoned"  # the run ended another way (failed, cancelled, Metriport does not know the patient)


def _uuid() -> str:
    return str(uuid.uuid4())


class InboxMessage(SQLModel, table=True):
    __tablename__ = "inbox_message"
    __table_args__ = (
        Index("ix_inbox_message_status_next", "status", "next_attempt_at"),
        Index("ix_inbox_message_patient_status", "patient_id", "status"),
        Index("ix_inbox_message_status_lease", "status", "lease_until"),
    )

    message_id: str = Field(primary_key=True, max_length=200)
    type: str = Field(max_length=200)
    request_id: str | None = Field(default=None, max_length=200, index=True)
    patient_id: str | None = Field(default=None, max_length=200)
    flow_run_id: str | None = Field(default=None, max_length=64)
    stage: str | None = Field(default=None, max_length=64)
    received_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    body: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    status: str = Field(default=MessageStatus.pending.value, max_length=20)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    claimed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    claimed_by: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    wait_id: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=500)


class Wait(SQLModel, table=True):
    __tablename__ = "wait"
    __table_args__ = (
        UniqueConstraint("flow_run_id", "stage", "attempt", name="uq_wait_run_stage_attempt"),
        Index("ix_wait_status", "status"),
        Index("ix_wait_patient_stage", "patient_id", "stage"),
        Index("ix_wait_stage_resolved", "stage", "resolved_at"),
    )

    id: str = Field(default_factory=_uuid, primary_key=True, max_length=64)
    flow_run_id: str = Field(max_length=64, index=True)
    stage: str = Field(max_length=64)
    attempt: int = 1
    patient_id: str | None = Field(default=None, max_length=200)
    request_id: str | None = Field(default=None, max_length=200, index=True)
    pause_key: str = Field(max_length=100)
    status: str = Field(default=WaitStatus.open.value, max_length=20)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    # When Metriport answered the start call, and when the run stopped watching and suspended: a reply's
    # time is resolved_at - requested_at; a slot held by the wait is requested_at to the first of the two.
    requested_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    suspended_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    soft_deadline: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    hard_deadline: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    progress: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON(), nullable=False))
    outcome: str | None = Field(default=None, max_length=20)
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON(), nullable=True))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    consumed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    delivery_attempts: int = 0
    next_delivery_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_delivery_error: str | None = Field(default=None, max_length=500)
    last_check_error: str | None = Field(default=None, max_length=500)
    abandoned_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    delivering_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))

    def result_model(self) -> StageResult | None:
        """The stored result as the stage's typed model (what the run receives as run_input)."""
        if self.result is None:
            return None
        return RESULT_MODELS[Stage(self.stage)].model_validate(self.result)


class Heartbeat(SQLModel, table=True):
    __tablename__ = "heartbeat"

    name: str = Field(primary_key=True, max_length=100)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON(), nullable=False))


class RunRevival(SQLModel, table=True):
    """How often the reconciler brought a crashed flow run back (the bound on attempts lives here)."""

    __tablename__ = "run_revival"

    flow_run_id: str = Field(primary_key=True, max_length=64)
    attempts: int = 0
    last_revived_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_crash_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_reason: str | None = Field(default=None, max_length=500)
    given_up_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class CallSchedule(SQLModel, table=True):
    """One row per rate-limited Metriport operation: its limit and the latest reserved call times
    (epoch seconds on the database's clock), shared by every process that makes start calls."""

    __tablename__ = "call_schedule"

    operation: str = Field(primary_key=True, max_length=64)
    per_window: int
    window_seconds: float
    margin_seconds: float
    recent: list[float] = Field(default_factory=list, sa_column=Column(JSON(), nullable=False))
    reserved: int = 0  # reservations made; each one writes it first, which takes the lock
