"""How the receiver's batches of webhooks reach PostgreSQL through psycopg 3: one pipelined round trip.

SQLAlchemy sends a batch as one multi-row VALUES statement whose text grows with the batch, past the length
up to which psycopg caches a statement's parse (4 KiB); psycopg then parsed it again for every batch, which
cost the receiver more CPU per webhook than anything else it does (79 against 27 CPU-us per row, batches
of 32 on this 2-core machine). Here the batch is psycopg's own executemany of a one-row INSERT, parsed
once and pipelined. Another driver (psycopg2) keeps SQLAlchemy's form.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from metriport_flows.store.models import InboxMessage, UTCDateTime

BATCH_COLUMNS = (
    "message_id", "type", "request_id", "patient_id", "flow_run_id", "stage",
    "body", "received_at", "status", "attempts", "next_attempt_at",
)  # fmt: skip
PIPELINED_INSERT = (
    f"INSERT INTO {InboxMessage.__tablename__} ({', '.join(BATCH_COLUMNS)}) "
    f"VALUES ({', '.join(f'%({name})s' for name in BATCH_COLUMNS)}) "
    "ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
)
_UTC_COLUMN = UTCDateTime()


def insert_pipelined(connection: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert `rows` (BATCH_COLUMNS each) in the connection's transaction; the messageIds that were new.

    The datetimes go through the column type, as SQLAlchemy would send them, and a driver error comes out
    as SQLAlchemy's (a dropped connection is invalidated), as from any other query of the store.
    """
    dialect = connection.dialect
    values = [
        {
            **row,
            "received_at": _UTC_COLUMN.process_bind_param(row["received_at"], dialect),
            "next_attempt_at": _UTC_COLUMN.process_bind_param(row["next_attempt_at"], dialect),
        }
        for row in rows
    ]
    driver = connection.connection.driver_connection
    assert driver is not None, "a checked-out connection has its driver connection"
    driver_error = dialect.loaded_dbapi.Error
    inserted: set[str] = set()
    with driver.cursor() as cursor:
        try:
            cursor.executemany(PIPELINED_INSERT, values, returning=True)
            while True:
                row = cursor.fetchone()
                if row is not None:
                    inserted.add(row[0])
                if not cursor.nextset():
                    return inserted
        except driver_error as exc:
            dropped = dialect.is_disconnect(exc, driver, cursor)
            if dropped:
                connection.invalidate(exc)
            raise DBAPIError.instance(
                PIPELINED_INSERT, None, exc, driver_error, connection_invalidated=dropped, dialect=dialect
            ) from exc
