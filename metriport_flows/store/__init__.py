"""The inbox of webhook messages and the waits of flow runs (sqlmodel; SQLite or PostgreSQL)."""

from metriport_flows.store.models import (
    Heartbeat,
    InboxMessage,
    MessageStatus,
    Wait,
    WaitStatus,
    utcnow,
)
from metriport_flows.store.store import Store, get_store, open_store

__all__ = [
    "Heartbeat",
    "InboxMessage",
    "MessageStatus",
    "Store",
    "Wait",
    "WaitStatus",
    "get_store",
    "open_store",
    "utcnow",
]
