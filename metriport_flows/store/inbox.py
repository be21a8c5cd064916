"""The inbox of webhook messages: insert once, claim exclusively, finish, retry, purge."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from metriport_flows.client.log_hygiene import redact_urls
from metriport_flows.store.base import StoreBase
from metriport_flows.store.inbox_batches import insert_unnested
from metriport_flows.store.models import (
    RETRYABLE_MESSAGE_STATUSES,
    InboxMessage,
    MessageStatus,
    utcnow,
)

# Short, so a killed dispatcher's rows come back soon; its live owner extends it every third (10 s).
CLAIM_LEASE = timedelta(seconds=30)
# A row nobody holds: what finishing, retrying, requeueing or orphaning it leaves in its claim columns.
RELEASED_CLAIM: dict[str, None] = {"claimed_at": None, "claimed_by": None, "lease_until": None}


@dataclass(frozen=True)
class NewMessage:
    """A verified webhook as the inbox stores it: its body and the ids read from it."""

    message_id: str
    type: str
    body: bytes | str | None
    request_id: str | None = None
    patient_id: str | None = None
    flow_run_id: str | None = None
    stage: str | None = None
    received_at: datetime | None = None

    def ids(self) -> dict[str, str | None]:
        """The columns read from the body, by name (what `unstorable_field` checks)."""
        return {
            "message_id": self.message_id,
            "type": self.type,
            "request_id": self.request_id,
            "patient_id": self.patient_id,
            "flow_run_id": self.flow_run_id,
            "stage": self.stage,
        }


def unstorable_field(values: Mapping[str, str | None]) -> str | None:
    """The first inbox column that cannot hold its value, with why (no value: it may be PHI), else None.

    Both databases need UTF-8 text without NUL; PostgreSQL also enforces each column's length.
    """
    for name, value in values.items():
        if value is None:
            continue
        length = InboxMessage.__table__.c[name].type.length  # type: ignore[attr-defined]
        if length is not None and len(value) > length:
            return f"{name} is longer than {length} characters"
        if "\x00" in value or not _encodes(value):
            return f"{name} is not UTF-8 text"
    return None


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")  # a lone surrogate (JSON's "\\ud800") does not
    except UnicodeEncodeError:
        return False
    return True


def message_rows(messages: Sequence[NewMessage]) -> list[dict[str, Any]]:
    """The inbox rows of new messages: pending, due now (or when they were received)."""
    now = utcnow()
    return [
        {
            "message_id": m.message_id,
            "type": m.type,
            "request_id": m.request_id or None,
            "patient_id": m.patient_id,
            "flow_run_id": m.flow_run_id,
            "stage": m.stage,
            "body": m.body.decode("utf-8") if isinstance(m.body, bytes) else m.body,
            "received_at": m.received_at or now,
            "status": MessageStatus.pending.value,
            "attempts": 0,
            "next_attempt_at": m.received_at or now,
        }
        for m in messages
    ]


def rejected_message_id(body: bytes) -> str:
    """The key of a rejected body: its hash, so a re-delivery of the same bytes is a duplicate."""
    return f"rejected-{hashlib.sha256(body).hexdigest()}"


class InboxQueries(StoreBase):
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
        message = NewMessage(message_id, type, body, request_id, patient_id, flow_run_id, stage, received_at)
        return message_id in self.insert_messages([message])

    def insert_messages(self, messages: Sequence[NewMessage]) -> set[str]:
        """Store a batch in one transaction (one commit for many webhooks); the messageIds that were new."""
        if not messages:
            return set()
        rows = message_rows(messages)
        with self.engine.begin() as connection:
            if connection.dialect.driver == "psycopg":
                return insert_unnested(connection, rows)
            # one statement compiled once (cached), sent as one executemany: no SQL built per batch
            statement = (
                self._insert(InboxMessage.__table__)  # type: ignore[attr-defined]
                .on_conflict_do_nothing(index_elements=["message_id"])
                .returning(InboxMessage.__table__.c.message_id)  # type: ignore[attr-defined]
            )
            return set(connection.execute(statement, rows).scalars())

    def insert_rejected(self, *, body: bytes, reason: str) -> bool:
        """Keep a signed body the inbox cannot hold as a message; True when new, False for a re-delivery.

        The text kept is the body with undecodable bytes and NUL escaped, enough to investigate it.
        """
        now = utcnow()
        text = body.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
        statement = self._insert(InboxMessage).values(
            message_id=rejected_message_id(body),
            type=MessageStatus.rejected.value,
            body=text,
            received_at=now,
            status=MessageStatus.rejected.value,
            attempts=0,
            next_attempt_at=now,
            finished_at=now,
            detail=reason[:500],
        )
        return self._inserted(statement)

    def _inserted(self, statement: postgresql.Insert | sqlite.Insert) -> bool:
        """Insert the row unless its messageId is there already; True when it was new."""
        once = statement.on_conflict_do_nothing(index_elements=["message_id"])
        with self.session() as session:
            inserted = session.execute(once.returning(col(InboxMessage.message_id))).first() is not None
            session.commit()
        return inserted

    def get_message(self, message_id: str) -> InboxMessage | None:
        """The row, or None; an id no row can hold (NUL, not UTF-8, too long) is simply not found."""
        if unstorable_field({"message_id": message_id}) is not None:
            return None
        with self.session() as session:
            return session.get(InboxMessage, message_id)

    def list_messages(self, status: MessageStatus | str | None = None, limit: int = 100) -> list[InboxMessage]:
        statement = select(InboxMessage).order_by(col(InboxMessage.received_at).desc()).limit(limit)
        if status is not None:
            statement = statement.where(col(InboxMessage.status) == MessageStatus(status).value)
        with self.session() as session:
            return list(session.scalars(statement))

    def claim_pending(
        self,
        limit: int = 50,
        *,
        owner: str,
        lease: timedelta = CLAIM_LEASE,
        now: datetime | None = None,
    ) -> list[InboxMessage]:
        """Due rows, each to exactly one owner, held until `lease` passes unless the owner extends it.
        Fresh (pending) rows come before retries (unmatched, error), so a backlog of retries never
        starves a new message; a row whose lease expired (its owner died) is claimable again."""
        now = now or utcnow()
        fresh = or_(
            and_(col(InboxMessage.status) == MessageStatus.pending.value, col(InboxMessage.next_attempt_at) <= now),
            and_(col(InboxMessage.status) == MessageStatus.claimed.value, col(InboxMessage.lease_until) <= now),
        )
        retries = and_(
            col(InboxMessage.status).in_([MessageStatus.unmatched.value, MessageStatus.error.value]),
            col(InboxMessage.next_attempt_at) <= now,
        )
        claimed = self._claim(fresh, col(InboxMessage.received_at), limit, owner, lease, now)
        if len(claimed) < limit:
            claimed += self._claim(retries, col(InboxMessage.next_attempt_at), limit - len(claimed), owner, lease, now)
        return claimed

    def _claim(
        self, due: Any, order: Any, limit: int, owner: str, lease: timedelta, now: datetime
    ) -> list[InboxMessage]:
        candidates = select(col(InboxMessage.message_id)).where(due).order_by(order).limit(limit)
        if self.is_postgres:
            # ARRAY(...) runs the locking subquery once; under `IN (...)` PostgreSQL may re-run it while
            # rechecking rows and so claim more than `limit` rows.
            chosen = col(InboxMessage.message_id) == func.any(
                func.array(candidates.with_for_update(skip_locked=True).scalar_subquery())
            )
        else:
            chosen = col(InboxMessage.message_id).in_(candidates.scalar_subquery())
        statement = (
            update(InboxMessage)
            .where(chosen, due)
            .values(status=MessageStatus.claimed.value, claimed_at=now, claimed_by=owner, lease_until=now + lease)
            .returning(InboxMessage)
            .execution_options(synchronize_session=False)
        )
        with self.session() as session:
            claimed = list(session.execute(statement).scalars())
            session.commit()
        return sorted(claimed, key=lambda message: message.received_at)

    def _owned(self, message_id: str, owner: str) -> Any:
        return and_(
            col(InboxMessage.message_id) == message_id,
            col(InboxMessage.status) == MessageStatus.claimed.value,
            col(InboxMessage.claimed_by) == owner,
        )

    def extend_claims(self, message_ids: list[str], *, owner: str, lease: timedelta = CLAIM_LEASE) -> int:
        """The owner's heartbeat: push the lease of the rows it is still working on; how many it holds."""
        if not message_ids:
            return 0
        statement = (
            update(InboxMessage)
            .where(
                col(InboxMessage.message_id).in_(message_ids),
                col(InboxMessage.status) == MessageStatus.claimed.value,
                col(InboxMessage.claimed_by) == owner,
            )
            .values(lease_until=utcnow() + lease)
        )
        return self._changed(statement)

    def finish_message(
        self,
        message_id: str,
        *,
        owner: str,
        status: MessageStatus | str = MessageStatus.done,
        wait_id: str | None = None,
        detail: str | None = None,
    ) -> bool:
        """Leave a claimed message in a final state: done (handled, duplicate, late) or orphan. Only its
        owner can: False (and nothing changed) when the claim was lost to someone else."""
        statement = (
            update(InboxMessage)
            .where(self._owned(message_id, owner))
            .values(
                status=MessageStatus(status).value,
                finished_at=utcnow(),
                wait_id=wait_id,
                detail=redact_urls(detail or "")[:500] or None,
                **RELEASED_CLAIM,
            )
        )
        return self._changed(statement) == 1

    def retry_message(
        self,
        message_id: str,
        *,
        owner: str,
        status: MessageStatus | str,
        delay: timedelta,
        error: str | None = None,
    ) -> bool:
        """Put a claimed message back (unmatched or error) with attempts + 1; it is never dropped. Only
        its owner can (False otherwise)."""
        statement = (
            update(InboxMessage)
            .where(self._owned(message_id, owner))
            .values(
                status=MessageStatus(status).value,
                attempts=col(InboxMessage.attempts) + 1,
                next_attempt_at=utcnow() + delay,
                **RELEASED_CLAIM,
                last_error=(redact_urls(error)[:2000] if error else col(InboxMessage.last_error)),
            )
        )
        return self._changed(statement) == 1

    def release_claims(self, message_ids: list[str], *, owner: str) -> int:
        """A stopping owner hands its unfinished rows back: due again now, attempts unchanged."""
        statement = (
            update(InboxMessage)
            .where(
                col(InboxMessage.message_id).in_(message_ids),
                col(InboxMessage.status) == MessageStatus.claimed.value,
                col(InboxMessage.claimed_by) == owner,
            )
            .values(
                status=MessageStatus.pending.value,
                next_attempt_at=utcnow(),
                **RELEASED_CLAIM,
            )
        )
        return self._changed(statement)

    def requeue_message(self, message_id: str) -> bool:
        """Dispatch this message again now (the ops `replay` command); never a row whose owner still
        holds its lease. False when no such message is stored or it is being worked on."""
        now = utcnow()
        statement = (
            update(InboxMessage)
            .where(
                col(InboxMessage.message_id) == message_id,
                or_(col(InboxMessage.status) != MessageStatus.claimed.value, col(InboxMessage.lease_until) <= now),
            )
            .values(
                status=MessageStatus.pending.value,
                next_attempt_at=now,
                **RELEASED_CLAIM,
                finished_at=None,
            )
        )
        return self._changed(statement) == 1

    def orphan_unmatched(self, older_than: timedelta) -> int:
        """Unmatched messages that no wait claimed within `older_than` stop being retried (kept)."""
        statement = (
            update(InboxMessage)
            .where(
                col(InboxMessage.status) == MessageStatus.unmatched.value,
                col(InboxMessage.received_at) <= utcnow() - older_than,
            )
            .values(status=MessageStatus.orphan.value, finished_at=utcnow())
        )
        return self._changed(statement)

    def backlog(self) -> list[tuple[str, int, datetime | None]]:
        statement = (
            select(col(InboxMessage.status), func.count(), func.min(col(InboxMessage.received_at)))
            .group_by(col(InboxMessage.status))
            .order_by(col(InboxMessage.status))
        )
        with self.session() as session:
            return [(status, count, oldest) for status, count, oldest in session.execute(statement)]

    def purge_bodies(self, older_than: timedelta) -> int:
        """Drop the bodies (the PHI) of finished messages; the rows stay as the dedup record."""
        statement = (
            update(InboxMessage)
            .where(
                col(InboxMessage.status).in_([MessageStatus.done.value, MessageStatus.orphan.value]),
                col(InboxMessage.received_at) <= utcnow() - older_than,
                col(InboxMessage.body).is_not(None),
            )
            .values(body=None)
        )
        return self._changed(statement)

    # -- heartbeats ---------------------------------------------------------------------------

    def stuck_messages(self, now: datetime, stuck_after: timedelta, limit: int = 500) -> list[InboxMessage]:
        """Rows due for dispatch for longer than `stuck_after` (no dispatcher is taking them), and claimed
        rows whose lease expired (their owner died). A live owner's row is never listed."""
        retryable = [s.value for s in RETRYABLE_MESSAGE_STATUSES]
        statement = (
            select(InboxMessage)
            .where(
                or_(
                    and_(
                        col(InboxMessage.status).in_(retryable), col(InboxMessage.next_attempt_at) <= now - stuck_after
                    ),
                    and_(col(InboxMessage.status) == MessageStatus.claimed.value, col(InboxMessage.lease_until) <= now),
                )
            )
            .order_by(col(InboxMessage.received_at))
            .limit(limit)
        )
        with self.session() as session:
            return list(session.scalars(statement))
