"""The waits of flow runs: register, resolve (compare-and-set), deliver; one row per stage attempt."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import or_, select, update
from sqlmodel import col

from metriport_flows.client.log_hygiene import redact_urls
from metriport_flows.domain.stages import RESULT_MODELS, ResolvedBy, Stage, StageResult, pause_key
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
        values: dict[str, Any] = dict(
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
            wait = session.scalars(
                select(Wait).where(
                    col(Wait.flow_run_id) == str(flow_run_id),
                    col(Wait.stage) == stage.value,
                    col(Wait.attempt) == attempt,
                )
            ).one()
        if request_id and wait.request_id != request_id:
            self.set_wait_request_id(wait.id, request_id)
            wait.request_id = request_id
        self._wake_unmatched(patient_id=patient_id, request_id=request_id)
        return wait

    def stored_request_id(self, flow_run_id: UUID | str, stage: Stage | str, attempt: int) -> str | None:
        """The request id a start call already returned for this stage attempt (a re-run reuses it)."""
        statement = select(col(Wait.request_id)).where(
            col(Wait.flow_run_id) == str(flow_run_id),
            col(Wait.stage) == Stage(stage).value,
            col(Wait.attempt) == attempt,
        )
        with self.session() as session:
            return session.execute(statement).scalar_one_or_none()

    def record_request_id(self, flow_run_id: UUID | str, stage: Stage | str, attempt: int, request_id: str) -> bool:
        """Keep the start call's request id on its stage attempt's wait; False when no wait is registered."""
        statement = select(col(Wait.id)).where(
            col(Wait.flow_run_id) == str(flow_run_id),
            col(Wait.stage) == Stage(stage).value,
            col(Wait.attempt) == attempt,
        )
        with self.session() as session:
            wait_id = session.execute(statement).scalar_one_or_none()
        if wait_id is None:
            return False
        self.set_wait_request_id(wait_id, request_id)
        return True

    def set_wait_request_id(self, wait_id: str, request_id: str) -> None:
        """Record the start call's answer. The deadlines count from the first answer, when Metriport was
        asked: a run may wait long between registering and asking (for a rate-limit slot, or crashed and
        queued for its revival), and that time is not Metriport's."""
        with self.session() as session:
            wait = session.get(Wait, wait_id)
            if wait is None:
                return
            if wait.request_id is None and wait.status == WaitStatus.open.value:
                now = utcnow()
                since_registered = max(now - wait.created_at, timedelta(0))
                wait.soft_deadline += since_registered
                wait.hard_deadline += since_registered
                wait.requested_at = now
            wait.request_id = request_id
            session.add(wait)
            session.commit()
        self._wake_unmatched(patient_id=None, request_id=request_id)

    def _wake_unmatched(self, *, patient_id: str | None, request_id: str | None) -> int:
        keys = []
        if patient_id:
            keys.append(col(InboxMessage.patient_id) == patient_id)
        if request_id:
            keys.append(col(InboxMessage.request_id) == request_id)
        if not keys:
            return 0
        statement = (
            update(InboxMessage)
            .where(col(InboxMessage.status) == MessageStatus.unmatched.value, or_(*keys))
            .values(next_attempt_at=utcnow())
        )
        return self._changed(statement)

    def get_wait(self, wait_id: str) -> Wait | None:
        with self.session() as session:
            return session.get(Wait, wait_id)

    def _waits(self, *conditions: Any, order: Any = None, limit: int | None = None) -> list[Wait]:
        statement = select(Wait).where(*conditions).order_by(order if order is not None else col(Wait.created_at))
        if limit is not None:
            statement = statement.limit(limit)
        with self.session() as session:
            return list(session.scalars(statement))

    def waits_for_run(self, flow_run_id: UUID | str) -> list[Wait]:
        return self._waits(col(Wait.flow_run_id) == str(flow_run_id))

    def live_waits_for_run(self, flow_run_id: UUID | str) -> list[Wait]:
        """The run's waits still to be read by it: open, or resolved and not yet delivered."""
        live = (WaitStatus.open.value, WaitStatus.resolved.value)
        return self._waits(col(Wait.flow_run_id) == str(flow_run_id), col(Wait.status).in_(live))

    def open_waits(self) -> list[Wait]:
        return self._waits(col(Wait.status) == WaitStatus.open.value)

    def undelivered_waits(self, now: datetime | None = None, *, due_only: bool = True, limit: int = 200) -> list[Wait]:
        """Resolved waits whose result has reached the run neither by resume nor by its own read."""
        conditions = [col(Wait.status) == WaitStatus.resolved.value]
        if due_only:
            conditions.append(col(Wait.next_delivery_at) <= (now or utcnow()))
        return self._waits(*conditions, order=col(Wait.next_delivery_at), limit=limit)

    def waits_past_soft_deadline(self, now: datetime | None = None) -> list[Wait]:
        return self._waits(col(Wait.status) == WaitStatus.open.value, col(Wait.soft_deadline) <= (now or utcnow()))

    def waits_past_hard_deadline(self, now: datetime | None = None) -> list[Wait]:
        return self._waits(col(Wait.status) == WaitStatus.open.value, col(Wait.hard_deadline) <= (now or utcnow()))

    def waits_for_request(self, request_id: str, stage: Stage | str | None = None) -> list[Wait]:
        """Every wait that recorded this request id, newest first: two runs for one patient share
        Metriport's query (a second start call answers with the running one's id)."""
        conditions = [col(Wait.request_id) == request_id]
        if stage is not None:
            conditions.append(col(Wait.stage) == Stage(stage).value)
        return self._waits(*conditions, order=col(Wait.created_at).desc())

    def latest_wait_for_run(self, flow_run_id: UUID | str, stage: Stage | str) -> Wait | None:
        waits = self._waits(
            col(Wait.flow_run_id) == str(flow_run_id),
            col(Wait.stage) == Stage(stage).value,
            order=col(Wait.attempt).desc(),
            limit=1,
        )
        return waits[0] if waits else None

    def latest_wait_for_patient(self, patient_id: str, stage: Stage | str) -> Wait | None:
        waits = self._waits(
            col(Wait.patient_id) == patient_id,
            col(Wait.stage) == Stage(stage).value,
            order=col(Wait.created_at).desc(),
            limit=1,
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

    def note_wait_check_error(self, wait_id: str, error: str) -> None:
        """Why the reconciler's last look at this wait failed (the wait stays open)."""
        with self.session() as session:
            statement = update(Wait).where(col(Wait.id) == wait_id).values(last_check_error=redact_urls(error)[:500])
            session.execute(statement)
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
            .where(col(Wait.id) == wait_id, col(Wait.status) == WaitStatus.open.value)
            .values(
                status=WaitStatus.resolved.value,
                outcome=typed.outcome.value,
                result=typed.model_dump(mode="json"),
                resolved_at=now,
                next_delivery_at=now,
            )
        )
        return self._changed(statement) == 1

    def mark_wait_suspended(self, wait_id: str) -> None:
        """The run stopped watching this wait and suspends: its process slot is free from now."""
        self._changed(update(Wait).where(col(Wait.id) == wait_id).values(suspended_at=utcnow()))

    def recent_reply_seconds(self, stage: Stage, limit: int = 50) -> list[float]:
        """Start call to webhook, in seconds, of the stage's last `limit` waits a webhook resolved."""
        statement = (
            select(col(Wait.requested_at), col(Wait.resolved_at), col(Wait.result))
            .where(
                col(Wait.stage) == Stage(stage).value,
                col(Wait.requested_at).is_not(None),
                col(Wait.resolved_at).is_not(None),
            )
            .order_by(col(Wait.resolved_at).desc())
            .limit(limit)
        )
        with self.session() as session:
            rows = session.execute(statement).all()
        return [
            (resolved - requested).total_seconds()
            for requested, resolved, result in rows
            if (result or {}).get("resolved_by") == ResolvedBy.webhook.value
        ]

    def _move_wait(self, wait_id: str, from_statuses: tuple[WaitStatus, ...], **values: Any) -> bool:
        statement = (
            update(Wait)
            .where(col(Wait.id) == wait_id, col(Wait.status).in_([s.value for s in from_statuses]))
            .values(**values)
        )
        return self._changed(statement) == 1

    def claim_delivery(self, wait_id: str, lease: timedelta) -> bool:
        """Compare-and-set: the one caller that may resume the run for this resolved wait now; anyone else
        (the dispatcher and the reconciler both deliver) gets False until it is delivered or let go."""
        now = utcnow()
        statement = (
            update(Wait)
            .where(
                col(Wait.id) == wait_id,
                col(Wait.status) == WaitStatus.resolved.value,
                or_(col(Wait.delivering_until).is_(None), col(Wait.delivering_until) <= now),
            )
            .values(delivering_until=now + lease)
        )
        return self._changed(statement) == 1

    def mark_wait_delivered(self, wait_id: str) -> bool:
        return self._move_wait(
            wait_id,
            (WaitStatus.resolved,),
            status=WaitStatus.delivered.value,
            delivered_at=utcnow(),
            delivering_until=None,
        )

    def abandon_wait(self, wait_id: str, reason: str | None = None) -> bool:
        """Close an open or resolved wait whose run ended another way (failed, cancelled, or a patient
        Metriport does not know): nothing polls it or delivers it again. Compare-and-set: False when it
        was delivered, consumed or closed."""
        return self._move_wait(
            wait_id,
            (WaitStatus.open, WaitStatus.resolved),
            status=WaitStatus.abandoned.value,
            abandoned_at=utcnow(),
            delivering_until=None,
            next_delivery_at=None,
            last_delivery_error=reason[:500] if reason else None,
        )

    def mark_wait_consumed(self, wait_id: str) -> bool:
        return self._move_wait(
            wait_id, (WaitStatus.resolved, WaitStatus.delivered), status=WaitStatus.consumed.value, consumed_at=utcnow()
        )

    def retry_delivery(self, wait_id: str, *, error: str | None, delay: timedelta) -> None:
        statement = (
            update(Wait)
            .where(col(Wait.id) == wait_id)
            .values(
                delivery_attempts=col(Wait.delivery_attempts) + 1,
                next_delivery_at=utcnow() + delay,
                last_delivery_error=redact_urls(error or "")[:500] or None,
                delivering_until=None,
            )
        )
        with self.session() as session:
            session.execute(statement)
            session.commit()
