"""`Store`: every read and write of the inbox and the waits, as short single-statement transactions.

Claims and state changes are single UPDATE statements guarded by the expected status (compare-and-set),
so two dispatchers, or a dispatcher and the reconciler, can never both win: on PostgreSQL the claim
uses `FOR UPDATE SKIP LOCKED`, on SQLite the statement holds the write lock. Inserts are
`INSERT .. ON CONFLICT DO NOTHING` on both dialects.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid4

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random

from metriport_flows.domain.stages import RESULT_MODELS, Stage, StageResult, pause_key
from metriport_flows.store.engine import alembic_config, make_engine, upgrade
from metriport_flows.store.models import (
    RETRYABLE_MESSAGE_STATUSES,
    Heartbeat,
    InboxMessage,
    MessageStatus,
    Wait,
    WaitStatus,
    utcnow,
)

CLAIM_LEASE = timedelta(minutes=5)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _insert(self, model: type) -> Any:
        return (postgresql.insert if self.is_postgres else sqlite.insert)(model)

    # -- schema -------------------------------------------------------------------------------

    @retry(
        retry=retry_if_exception_type((OperationalError, IntegrityError)),
        stop=stop_after_attempt(5),
        wait=wait_random(0.1, 0.5),
        reraise=True,
    )
    def migrate(self) -> None:
        """Bring the schema to the newest revision (a no-op when it is there already)."""
        head = ScriptDirectory.from_config(alembic_config(self.engine)).get_current_head()
        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        if current != head:
            upgrade(self.engine)

    def ping(self) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(text("SELECT 1")).scalar_one() == 1

    def dispose(self) -> None:
        self.engine.dispose()

    # -- waits --------------------------------------------------------------------------------

    def register_wait(
        self,
        *,
        flow_run_id: UUID | str,
        stage: Stage | str,
        attempt: int,
        patient_id: str | None,
        soft_deadline: datetime,
        hard_deadline: datetime,
        request_id: str | None = None,
    ) -> Wait:
        """Idempotent on (flow_run_id, stage, attempt): a resumed run that registers again gets the same
        row back. Wakes this patient's (and this request's) unmatched messages."""
        stage = Stage(stage)
        now = utcnow()
        values = dict(
            id=str(uuid4()),
            flow_run_id=str(flow_run_id),
            stage=stage.value,
            attempt=attempt,
            patient_id=patient_id,
            request_id=request_id or None,
            pause_key=pause_key(stage, attempt),
            status=WaitStatus.open.value,
            created_at=now,
            soft_deadline=soft_deadline,
            hard_deadline=hard_deadline,
            progress={},
            delivery_attempts=0,
        )
        statement = (
            self._insert(Wait)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["flow_run_id", "stage", "attempt"])
        )
        with self.session() as session:
            session.execute(statement)
            session.commit()
            wait = session.exec(
                select(Wait).where(
                    Wait.flow_run_id == str(flow_run_id), Wait.stage == stage.value, Wait.attempt == attempt
                )
            ).scalar_one()
        if request_id and wait.request_id != request_id:
            self.set_wait_request_id(wait.id, request_id)
            wait.request_id = request_id
        self._wake_unmatched(patient_id=patient_id, request_id=request_id)
        return wait

    def set_wait_request_id(self, wait_id: str, request_id: str) -> None:
        with self.session() as session:
            session.execute(update(Wait).where(Wait.id == wait_id).values(request_id=request_id))
            session.commit()
        self._wake_unmatched(patient_id=None, request_id=request_id)

    def _wake_unmatched(self, *, patient_id: str | None, request_id: str | None) -> int:
        keys = []
        if patient_id:
            keys.append(InboxMessage.patient_id == patient_id)
        if request_id:
            keys.append(InboxMessage.request_id == request_id)
        if not keys:
            return 0
        statement = (
            update(InboxMessage)
            .where(InboxMessage.status == MessageStatus.unmatched.value, or_(*keys))
            .values(next_attempt_at=utcnow())
        )
        with self.session() as session:
            count = session.execute(statement).rowcount
            session.commit()
        return count

    def get_wait(self, wait_id: str) -> Wait | None:
        with self.session() as session:
            return session.get(Wait, wait_id)

    def _waits(self, *conditions: Any, order: Any = None, limit: int | None = None) -> list[Wait]:
        statement = select(Wait).where(*conditions).order_by(order if order is not None else Wait.created_at)
        if limit is not None:
            statement = statement.limit(limit)
        with self.session() as session:
            return list(session.exec(statement).scalars())

    def waits_for_run(self, flow_run_id: UUID | str) -> list[Wait]:
        return self._waits(Wait.flow_run_id == str(flow_run_id))

    def open_waits(self) -> list[Wait]:
        return self._waits(Wait.status == WaitStatus.open.value)

    def undelivered_waits(self, now: datetime | None = None, *, due_only: bool = True, limit: int = 200) -> list[Wait]:
        """Resolved waits whose result has reached the run neither by resume nor by its own read."""
        conditions = [Wait.status == WaitStatus.resolved.value]
        if due_only:
            conditions.append(Wait.next_delivery_at <= (now or utcnow()))
        return self._waits(*conditions, order=Wait.next_delivery_at, limit=limit)

    def waits_past_soft_deadline(self, now: datetime | None = None) -> list[Wait]:
        return self._waits(Wait.status == WaitStatus.open.value, Wait.soft_deadline <= (now or utcnow()))

    def waits_past_hard_deadline(self, now: datetime | None = None) -> list[Wait]:
        return self._waits(Wait.status == WaitStatus.open.value, Wait.hard_deadline <= (now or utcnow()))

    def find_wait_by_request_id(self, request_id: str, stage: Stage | str | None = None) -> Wait | None:
        conditions = [Wait.request_id == request_id]
        if stage is not None:
            conditions.append(Wait.stage == Stage(stage).value)
        waits = self._waits(*conditions, order=Wait.created_at.desc(), limit=1)
        return waits[0] if waits else None

    def latest_wait_for_run(self, flow_run_id: UUID | str, stage: Stage | str) -> Wait | None:
        waits = self._waits(
            Wait.flow_run_id == str(flow_run_id), Wait.stage == Stage(stage).value, order=Wait.attempt.desc(), limit=1
        )
        return waits[0] if waits else None

    def latest_wait_for_patient(self, patient_id: str, stage: Stage | str) -> Wait | None:
        waits = self._waits(
            Wait.patient_id == patient_id, Wait.stage == Stage(stage).value, order=Wait.created_at.desc(), limit=1
        )
        return waits[0] if waits else None

    def note_wait_progress(self, wait_id: str, values: Mapping[str, Any]) -> None:
        """Remember what a message said (e.g. the document count) for the message that resolves it."""
        with self.session() as session:
            wait = session.get(Wait, wait_id)
            if wait is None:
                return
            wait.progress = {**(wait.progress or {}), **values}
            session.add(wait)
            session.commit()

    def resolve_wait(self, wait_id: str, result: StageResult) -> bool:
        """Compare-and-set from open: True for the one caller that resolved it, False for all others."""
        wait = self.get_wait(wait_id)
        if wait is None:
            return False
        typed = RESULT_MODELS[Stage(wait.stage)].model_validate(result.model_dump())
        now = utcnow()
        statement = (
            update(Wait)
            .where(Wait.id == wait_id, Wait.status == WaitStatus.open.value)
            .values(
                status=WaitStatus.resolved.value,
                outcome=typed.outcome.value,
                result=typed.model_dump(mode="json"),
                resolved_at=now,
                next_delivery_at=now,
            )
        )
        with self.session() as session:
            won = session.execute(statement).rowcount == 1
            session.commit()
        return won

    def wait_result(self, wait_id: str) -> StageResult | None:
        wait = self.get_wait(wait_id)
        return None if wait is None else wait.result_model()

    def _move_wait(self, wait_id: str, from_statuses: tuple[WaitStatus, ...], **values: Any) -> bool:
        statement = (
            update(Wait).where(Wait.id == wait_id, Wait.status.in_([s.value for s in from_statuses])).values(**values)
        )
        with self.session() as session:
            moved = session.execute(statement).rowcount == 1
            session.commit()
        return moved

    def mark_wait_delivered(self, wait_id: str) -> bool:
        return self._move_wait(
            wait_id, (WaitStatus.resolved,), status=WaitStatus.delivered.value, delivered_at=utcnow()
        )

    def mark_wait_consumed(self, wait_id: str) -> bool:
        return self._move_wait(
            wait_id, (WaitStatus.resolved, WaitStatus.delivered), status=WaitStatus.consumed.value, consumed_at=utcnow()
        )

    def retry_delivery(self, wait_id: str, *, error: str | None, delay: timedelta) -> None:
        statement = (
            update(Wait)
            .where(Wait.id == wait_id)
            .values(
                delivery_attempts=Wait.delivery_attempts + 1,
                next_delivery_at=utcnow() + delay,
                last_delivery_error=(error or "")[:500] or None,
            )
        )
        with self.session() as session:
            session.execute(statement)
            session.commit()

    # -- inbox --------------------------------------------------------------------------------

    def insert_message(
        self,
        *,
        message_id: str,
        type: str,
        body: bytes | str | None,
        request_id: str | None = None,
        patient_id: str | None = None,
        flow_run_id: str | None = None,
        stage: str | None = None,
        received_at: datetime | None = None,
    ) -> bool:
        """True when stored, False when this messageId was already there (a duplicate delivery)."""
        now = received_at or utcnow()
        statement = (
            self._insert(InboxMessage)
            .values(
                message_id=message_id,
                type=type,
                request_id=request_id or None,
                patient_id=patient_id,
                flow_run_id=flow_run_id,
                stage=stage,
                body=body.decode("utf-8") if isinstance(body, bytes) else body,
                received_at=now,
                status=MessageStatus.pending.value,
                attempts=0,
                next_attempt_at=now,
            )
            .on_conflict_do_nothing(index_elements=["message_id"])
            .returning(InboxMessage.message_id)
        )
        with self.session() as session:
            inserted = session.execute(statement).first() is not None
            session.commit()
        return inserted

    def get_message(self, message_id: str) -> InboxMessage | None:
        with self.session() as session:
            return session.get(InboxMessage, message_id)

    def list_messages(self, status: MessageStatus | str | None = None, limit: int = 100) -> list[InboxMessage]:
        statement = select(InboxMessage).order_by(InboxMessage.received_at.desc()).limit(limit)
        if status is not None:
            statement = statement.where(InboxMessage.status == MessageStatus(status).value)
        with self.session() as session:
            return list(session.exec(statement).scalars())

    def claim_pending(self, limit: int = 50, *, lease: timedelta = CLAIM_LEASE) -> list[InboxMessage]:
        """Due rows, oldest first, each to exactly one caller; a claim older than `lease` (a crashed
        dispatcher) is claimable again."""
        now = utcnow()
        due = or_(
            and_(
                InboxMessage.status.in_([s.value for s in RETRYABLE_MESSAGE_STATUSES]),
                InboxMessage.next_attempt_at <= now,
            ),
            and_(InboxMessage.status == MessageStatus.claimed.value, InboxMessage.claimed_at <= now - lease),
        )
        candidates = select(InboxMessage.message_id).where(due).order_by(InboxMessage.received_at).limit(limit)
        if self.is_postgres:
            # ARRAY(...) runs the locking subquery once; under `IN (...)` PostgreSQL may re-run it while
            # rechecking rows and so claim more than `limit` rows.
            chosen = InboxMessage.message_id == func.any(
                func.array(candidates.with_for_update(skip_locked=True).scalar_subquery())
            )
        else:
            chosen = InboxMessage.message_id.in_(candidates.scalar_subquery())
        statement = (
            update(InboxMessage)
            .where(chosen, due)
            .values(status=MessageStatus.claimed.value, claimed_at=now)
            .returning(InboxMessage)
            .execution_options(synchronize_session=False)
        )
        with self.session() as session:
            claimed = list(session.execute(statement).scalars())
            session.commit()
        return sorted(claimed, key=lambda message: message.received_at)

    def finish_message(
        self,
        message_id: str,
        *,
        status: MessageStatus | str = MessageStatus.done,
        wait_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Leave a claimed message in a final state: done (handled, duplicate, late) or orphan."""
        statement = (
            update(InboxMessage)
            .where(InboxMessage.message_id == message_id)
            .values(
                status=MessageStatus(status).value,
                finished_at=utcnow(),
                wait_id=wait_id,
                detail=(detail or "")[:500] or None,
                claimed_at=None,
            )
        )
        with self.session() as session:
            session.execute(statement)
            session.commit()

    def retry_message(
        self, message_id: str, *, status: MessageStatus | str, delay: timedelta, error: str | None = None
    ) -> None:
        """Put a claimed message back (unmatched or error) with attempts + 1; it is never dropped."""
        statement = (
            update(InboxMessage)
            .where(InboxMessage.message_id == message_id)
            .values(
                status=MessageStatus(status).value,
                attempts=InboxMessage.attempts + 1,
                next_attempt_at=utcnow() + delay,
                claimed_at=None,
                last_error=(error[:2000] if error else InboxMessage.last_error),
            )
        )
        with self.session() as session:
            session.execute(statement)
            session.commit()

    def requeue_message(self, message_id: str) -> bool:
        """Dispatch this message again now, whatever its state (the ops `replay` command)."""
        statement = (
            update(InboxMessage)
            .where(InboxMessage.message_id == message_id)
            .values(
                status=MessageStatus.pending.value,
                next_attempt_at=utcnow(),
                claimed_at=None,
                finished_at=None,
            )
        )
        with self.session() as session:
            found = session.execute(statement).rowcount == 1
            session.commit()
        return found

    def orphan_unmatched(self, older_than: timedelta) -> int:
        """Unmatched messages that no wait claimed within `older_than` stop being retried (kept)."""
        statement = (
            update(InboxMessage)
            .where(
                InboxMessage.status == MessageStatus.unmatched.value,
                InboxMessage.received_at <= utcnow() - older_than,
            )
            .values(status=MessageStatus.orphan.value, finished_at=utcnow())
        )
        with self.session() as session:
            count = session.execute(statement).rowcount
            session.commit()
        return count

    def backlog(self) -> list[tuple[str, int, datetime | None]]:
        statement = (
            select(InboxMessage.status, func.count(), func.min(InboxMessage.received_at))
            .group_by(InboxMessage.status)
            .order_by(InboxMessage.status)
        )
        with self.session() as session:
            return [(status, count, oldest) for status, count, oldest in session.execute(statement)]

    def purge_bodies(self, older_than: timedelta) -> int:
        """Drop the bodies (the PHI) of finished messages; the rows stay as the dedup record."""
        statement = (
            update(InboxMessage)
            .where(
                InboxMessage.status.in_([MessageStatus.done.value, MessageStatus.orphan.value]),
                InboxMessage.received_at <= utcnow() - older_than,
                InboxMessage.body.is_not(None),
            )
            .values(body=None)
        )
        with self.session() as session:
            count = session.execute(statement).rowcount
            session.commit()
        return count

    # -- heartbeats ---------------------------------------------------------------------------

    def record_heartbeat(self, name: str, detail: Mapping[str, Any] | None = None) -> None:
        values = {"name": name, "at": utcnow(), "detail": dict(detail or {})}
        statement = self._insert(Heartbeat).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["name"], set_={"at": statement.excluded.at, "detail": statement.excluded.detail}
        )
        with self.session() as session:
            session.execute(statement)
            session.commit()

    def get_heartbeat(self, name: str) -> Heartbeat | None:
        with self.session() as session:
            return session.get(Heartbeat, name)


@lru_cache
def get_store() -> Store:
    """The process's store, from `DATABASE_URL`, migrated."""
    from metriport_flows.settings import get_settings

    store = Store(get_settings().database_url)
    store.migrate()
    return store
