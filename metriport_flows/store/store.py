"""`Store`: every read and write of the inbox and the waits, as short single-statement transactions,
and the schedule of Metriport start calls (`call_slots.py`).

Claims and state changes are single UPDATE statements guarded by the expected status (compare-and-set),
so two dispatchers, or a dispatcher and the reconciler, can never both win: on PostgreSQL the claim
uses `FOR UPDATE SKIP LOCKED`, on SQLite the statement holds the write lock. Inserts are
`INSERT .. ON CONFLICT DO NOTHING` on both dialects.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from metriport_flows.store.call_slots import CallSlotQueries
from metriport_flows.store.inbox import InboxQueries
from metriport_flows.store.models import Heartbeat, utcnow
from metriport_flows.store.revivals import RevivalQueries
from metriport_flows.store.waits import WaitQueries


class Store(WaitQueries, InboxQueries, RevivalQueries, CallSlotQueries):
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


def open_store(url: str) -> Store:
    """The store at `url`, migrated: how every process opens its inbox."""
    store = Store(url)
    store.migrate()
    return store


@lru_cache
def get_store() -> Store:
    """The process's store, from `DATABASE_URL`, migrated."""
    from metriport_flows.settings import get_settings

    return open_store(get_settings().database_url)
