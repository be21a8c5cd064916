"""Group commit: many webhooks in one transaction, each answered only after its row is committed, on
SQLite and PostgreSQL; a failed batch fails every request in it and the next batch goes on."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel import SQLModel

from metriport_flows.store import InboxMessage, Store
from metriport_flows.store.inbox import NewMessage
from metriport_flows.webhook.inbox_writer import InboxWriter


def message(message_id: str) -> NewMessage:
    return NewMessage(message_id, "medical.document-download", b'{"meta":{}}', patient_id="pat-1")


async def test_concurrent_messages_and_their_duplicates_are_each_stored_once(store: Store) -> None:
    writer = InboxWriter(store, max_batch=64)
    ids = [str(uuid.uuid4()) for _ in range(150)]
    store.insert_message(message_id=ids[0], type="medical.document-download", body="{}")  # delivered earlier
    try:
        answers = await asyncio.gather(*(writer.store_message(message(i)) for i in ids * 3))
    finally:
        await writer.close()
    new = [i for i, stored in zip(ids * 3, answers, strict=True) if stored]
    assert sorted(new) == sorted(ids[1:])  # one "stored" per new id, whichever copy won; the rest duplicates
    assert sum(count for _, count, _ in store.backlog()) == len(ids)


def test_a_batch_reports_only_the_ids_it_added(store: Store) -> None:
    store.insert_message(message_id="m-old", type="t", body="{}")
    assert store.insert_messages([message("m-old"), message("m-1"), message("m-1"), message("m-2")]) == {"m-1", "m-2"}
    assert store.insert_messages([]) == set()


async def test_a_failed_batch_fails_each_request_and_the_next_batch_is_stored(store: Store) -> None:
    writer = InboxWriter(store)
    with store.engine.begin() as connection:
        connection.execute(text("DROP TABLE inbox_message"))
    try:
        failed = await asyncio.gather(
            *(writer.store_message(message(f"m-{n}")) for n in range(5)), return_exceptions=True
        )
        assert all(isinstance(answer, (OperationalError, ProgrammingError)) for answer in failed), failed
        SQLModel.metadata.create_all(store.engine, tables=[InboxMessage.__table__])  # type: ignore[list-item]
        assert await writer.store_message(message("m-0")) is True
    finally:
        await writer.close()
    assert store.get_message("m-0") is not None and store.get_message("m-1") is None
