"""The inbox's batch insert on both databases (PostgreSQL's own unnest statement included, from a thread
and from the event loop): what it stores, which ids it reports new, and what its failures look like to the
receiver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from metriport_flows.store import Store
from metriport_flows.store.async_inbox import PostgresInbox, async_inbox
from metriport_flows.store.inbox import NewMessage
from metriport_flows.store.inbox_batches import insert_unnested


def message(message_id: str, received_at: datetime | None = None) -> NewMessage:
    return NewMessage(
        message_id, "medical.document-download", b'{"a":"\\"q\\" \xc3\xa9"}', "rq", "pat", None, None, received_at
    )


def test_a_batch_stores_each_new_row_as_the_orm_reads_it(store: Store) -> None:
    when = datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC)
    store.insert_message(message_id="m-old", type="t", body="{}")
    assert store.insert_messages([message("m-old"), message("m-1", when), message("m-1"), message("m-2")]) == {
        "m-1",
        "m-2",
    }
    row = store.get_message("m-1")
    assert row is not None and row.received_at == when and row.next_attempt_at == when
    assert row.body == '{"a":"\\"q\\" é"}' and row.status == "pending" and row.attempts == 0
    assert row.request_id == "rq" and row.patient_id == "pat"
    fresh = store.get_message("m-2")
    assert fresh is not None and abs(fresh.received_at - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_a_dropped_connection_is_an_sqlalchemy_error_and_is_not_used_again(store: Store) -> None:
    """PostgreSQL restarted under the receiver: the batch fails as any query of the store would (the
    receiver answers 503 and Metriport's delivery is asked for again), and the connection is invalidated,
    so the pool does not hand it out again."""
    now = datetime.now(UTC)
    row = {
        "message_id": "m-1",
        "type": "t",
        "status": "pending",
        "attempts": 0,
        "received_at": now,
        "next_attempt_at": now,
    }
    with store.engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        connection.commit()
        with store.engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(OperationalError) as failed:
            insert_unnested(connection, [row])
        assert isinstance(failed.value, DBAPIError) and failed.value.connection_invalidated
        assert connection.invalidated
    assert store.insert_messages([message("m-1")]) == {"m-1"}


async def test_the_event_loop_s_batch_stores_rows_as_the_store_s_own_does(store: Store) -> None:
    when = datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC)
    store.insert_message(message_id="m-old", type="t", body="{}")
    inbox = async_inbox(store)
    try:
        assert isinstance(inbox, PostgresInbox) == store.is_postgres
        new = await inbox.insert_messages([message("m-old"), message("m-1", when), message("m-1"), message("m-2")])
        assert await inbox.insert_messages([]) == set()
    finally:
        await inbox.dispose()
    assert new == {"m-1", "m-2"}
    row = store.get_message("m-1")
    assert row is not None and row.received_at == when and row.next_attempt_at == when
    assert row.body == '{"a":"\\"q\\" é"}' and row.status == "pending" and row.patient_id == "pat"


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
async def test_a_batch_that_finds_its_connection_dropped_is_sent_again_on_a_new_one(store: Store) -> None:
    """PostgreSQL restarted between two batches: the connection the event loop's engine kept is gone (it
    does not ping before each batch), and the batch goes again once on a fresh one instead of failing."""
    inbox = PostgresInbox(store.url)
    try:
        assert await inbox.insert_messages([message("m-1")]) == {"m-1"}
        async with inbox.engine.connect() as connection:
            pid = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
        with store.engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert await inbox.insert_messages([message("m-2")]) == {"m-2"}
    finally:
        await inbox.dispose()
    assert store.get_message("m-2") is not None
