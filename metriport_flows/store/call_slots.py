"""Reserving a time for each Metriport start call on one schedule shared by every process.

Each reservation is one short transaction on the operation's row: a write first (so SQLite takes its
write lock and PostgreSQL locks the row, and two processes never read the same schedule), then the
database's clock, then the new time (`RateLimit.reserve`). The caller sleeps until its time; there
is no polling and no retry loop, and the clock of one database serves every machine.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Float, cast, func, select, update
from sqlmodel import Session, col

from metriport_flows.domain.rate_limits import Operation, RateLimit, Reservation
from metriport_flows.store.base import StoreBase
from metriport_flows.store.models import CallSchedule


class CallSlotQueries(StoreBase):
    def set_rate_limit(self, limit: RateLimit) -> None:
        """Create or update the operation's limit; the reserved times stay."""
        values = {
            "per_window": limit.per_window,
            "window_seconds": limit.window_seconds,
            "margin_seconds": limit.margin_seconds,
        }
        statement = self._insert(CallSchedule).values(operation=limit.operation.value, recent=[], **values)
        statement = statement.on_conflict_do_update(index_elements=["operation"], set_=values)
        with self.session() as session:
            session.execute(statement)
            session.commit()

    def rate_limit(self, operation: Operation) -> RateLimit | None:
        with self.session() as session:
            row = session.get(CallSchedule, Operation(operation).value)
        return None if row is None else _limit_of(row)

    def reserve_call(self, operation: Operation, default: RateLimit) -> Reservation:
        """Reserve the next time for one start call (`.wait`: the seconds until it). `default` applies when
        no limit was set for the operation."""
        key = Operation(operation).value
        with self.session() as session:
            session.execute(
                self._insert(CallSchedule)
                .values(
                    operation=key,
                    per_window=default.per_window,
                    window_seconds=default.window_seconds,
                    margin_seconds=default.margin_seconds,
                    recent=[],
                )
                .on_conflict_do_nothing()
            )
            session.execute(
                update(CallSchedule)
                .where(col(CallSchedule.operation) == key)
                .values(reserved=col(CallSchedule.reserved) + 1)
            )
            row = session.execute(select(CallSchedule).where(col(CallSchedule.operation) == key)).scalar_one()
            now = self._clock(session)
            limit = _limit_of(row)
            at, recent = limit.reserve(row.recent, now)
            session.execute(update(CallSchedule).where(col(CallSchedule.operation) == key).values(recent=recent))
            session.commit()
        return Reservation(at, now)

    def reserved_calls(self, operation: Operation) -> list[float]:
        """The latest reserved times (at most one window's count), oldest first."""
        with self.session() as session:
            row = session.get(CallSchedule, Operation(operation).value)
        return [] if row is None else list(row.recent)

    def _clock(self, session: Session) -> float:
        """Now, in epoch seconds, on the database's clock (the same for every process and machine)."""
        now: ColumnElement[Any] = (
            func.extract("epoch", func.clock_timestamp())
            if self.is_postgres
            else (func.julianday("now") - 2440587.5) * 86400.0
        )
        return float(session.execute(select(cast(now, Float))).scalar_one())


def _limit_of(row: CallSchedule) -> RateLimit:
    return RateLimit(Operation(row.operation), row.per_window, row.window_seconds, row.margin_seconds)
