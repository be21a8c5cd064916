"""How the receiver's batches of webhooks reach PostgreSQL through psycopg 3: one pipelined round trip.

SQLAlchemy sends a batch as one multi-row VALUES statement whose text grows with the batch, past the length
up to which psycopg caches a statement's parse (4 KiB); psycopg then parsed it again for every batch, which
cost the receiver more CPU per webhook than anything else it does (79 against 27 CPU-us per row, batches
of 32 on this 2-core machine). Here the batch is psycopg's own executemany of a one-row INSERT, parsed
once and pipelined. Another driver (psycopg2) keeps SQLAlchemy's form.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError

from metriport_flows.store.models import InboxMessage

_TABLE = InboxMessage.__table__  # type: ignore[attr-defined]


@cache
def _statement(columns: tuple[str, ...]) -> str:
    """The one-row INSERT for rows holding `columns` (the store's row dicts: one statement in practice)."""
    return (
        f"INSERT INTO {_TABLE.name} ({', '.join(columns)}) VALUES ({', '.join(f'%({c})s' for c in columns)}) "
        "ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
    )


@cache
def _bind_processors(columns: tuple[str, ...], dialect: Dialect) -> dict[str, Callable[[Any], Any]]:
    """Each column type's bind processing (aware UTC datetimes to naive), as SQLAlchemy applies it."""
    found = ((name, _TABLE.c[name].type.bind_processor(dialect)) for name in columns)
    return {name: process for name, process in found if process is not None}


def insert_pipelined(connection: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert `rows` (column -> value, the same columns each) in the connection's transaction; the
    messageIds that were new. Values go through their column types, as SQLAlchemy would send them, and a
    driver error comes out as SQLAlchemy's (a dropped connection is invalidated), as from any other query
    of the store."""
    columns = tuple(rows[0])
    statement, processors = _statement(columns), _bind_processors(columns, connection.dialect)
    values = [row | {name: process(row[name]) for name, process in processors.items()} for row in rows]
    driver = connection.connection.driver_connection
    assert driver is not None, "a checked-out connection has its driver connection"
    driver_error = connection.dialect.loaded_dbapi.Error
    inserted: set[str] = set()
    with driver.cursor() as cursor:
        try:
            cursor.executemany(statement, values, returning=True)
            while True:
                row = cursor.fetchone()
                if row is not None:
                    inserted.add(row[0])
                if not cursor.nextset():
                    return inserted
        except driver_error as exc:
            dropped = connection.dialect.is_disconnect(exc, driver, cursor)
            if dropped:
                connection.invalidate(exc)
            raise DBAPIError.instance(
                statement, None, exc, driver_error, connection_invalidated=dropped, dialect=connection.dialect
            ) from exc
