"""The waits of flow runs: register, resolve (compare-and-set), deliver; one row per stage attempt."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import or_, select, update

from metriport_flows.domain.stages import RESULT_MODELS, Stage, StageResult, pause_key
from metriport_flows.store.base import StoreBase
from metriport_flows.store.models import (
    InboxMessage,
    MessageStatus,
    Wait,
    WaitStatus,
    utcnow,
)


class WaitQueries(StoreBase):
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

    def abandon_wait(self, wait_id: str, reason: str) -> bool:
        """Close an open wait whose run ends without it, so nothing asks Metriport about it again."""
        return self._move_wait(
            wait_id,
            (WaitStatus.open,),
            status=WaitStatus.abandoned.value,
            resolved_at=utcnow(),
            next_delivery_at=None,
            last_delivery_error=reason[:500],
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
