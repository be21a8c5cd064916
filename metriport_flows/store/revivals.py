"""Crashed flow runs the reconciler brings back: how often each was revived, and when it gave up."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import col

from metriport_flows.store.base import StoreBase
from metriport_flows.store.models import RunRevival, utcnow


class RevivalQueries(StoreBase):
    def get_revival(self, flow_run_id: str) -> RunRevival | None:
        with self.session() as session:
            return session.get(RunRevival, flow_run_id)

    def count_revival(self, flow_run_id: str, crash_at: datetime, bound: int, reason: str) -> int | None:
        """Count the revival of the run's crash at `crash_at` and return its number; None when this crash
        was counted already (by another reconciler too: compare-and-set) or `bound` revivals were made."""
        row = self._revival_row(flow_run_id)
        if row.last_crash_at == crash_at or row.attempts >= bound or row.given_up_at is not None:
            return None
        statement = (
            update(RunRevival)
            .where(col(RunRevival.flow_run_id) == flow_run_id, col(RunRevival.attempts) == row.attempts)
            .values(
                attempts=row.attempts + 1, last_crash_at=crash_at, last_revived_at=utcnow(), last_reason=reason[:500]
            )
        )
        return row.attempts + 1 if self._changed(statement) else None

    def _revival_row(self, flow_run_id: str) -> RunRevival:
        with self.session() as session:
            session.execute(self._insert(RunRevival).values(flow_run_id=flow_run_id).on_conflict_do_nothing())
            session.commit()
            row = session.get(RunRevival, flow_run_id)
        if row is None:
            raise RuntimeError(f"run_revival row for {flow_run_id} vanished")
        return row

    def give_up_revival(self, flow_run_id: str, crash_at: datetime, reason: str) -> bool:
        """Mark the run as not brought back again after its crash at `crash_at` (one that was not revived);
        True for the one caller that marked it."""
        row = self._revival_row(flow_run_id)
        if row.last_crash_at == crash_at:
            return False
        statement = (
            update(RunRevival)
            .where(col(RunRevival.flow_run_id) == flow_run_id, col(RunRevival.given_up_at).is_(None))
            .values(given_up_at=utcnow(), last_reason=reason[:500])
        )
        return bool(self._changed(statement))
