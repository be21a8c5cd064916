"""The store's guarantees on SQLite and PostgreSQL: idempotent inserts, exclusive claims, CAS waits."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from metriport_devtools.processes import poll_until
from metriport_flows.domain.stages import (
    ConsolidatedReady,
    DocumentsReady,
    Outcome,
    StageResult,
)
from metriport_flows.store import MessageStatus, Store, WaitStatus, utcnow
from metriport_flows.store.engine import MIGRATION_LOCK
from tests.fixtures.database import TEST_DATABASE_URL, fresh_postgres_schema

OWNER = "dispatcher-test"


def _register(
    store: Store,
    *,
    patient_id: str = "pat-1",
    stage: str = "documents",
    attempt: int = 1,
    flow_run_id: str | None = None,
    request_id: str | None = None,
    soft: float = 600,
):
    return store.register_wait(
        flow_run_id=flow_run_id or str(uuid.uuid4()),
        stage=stage,
        attempt=attempt,
        patient_id=patient_id,
        soft_deadline=utcnow() + timedelta(seconds=soft),
        hard_deadline=utcnow() + timedelta(hours=6),
        request_id=request_id,
    )


def _insert(store: Store, message_id: str | None = None, **fields) -> str:
    message_id = message_id or str(uuid.uuid4())
    fields.setdefault("type", "medical.document-download")
    fields.setdefault("body", '{"meta":{}}')
    assert store.insert_message(message_id=message_id, **fields)
    return message_id


def test_migrate_creates_tables_and_is_repeatable(store: Store) -> None:
    store.migrate()
    tables = set(inspect(store.engine).get_table_names())
    assert {"inbox_message", "wait", "heartbeat", "call_schedule", "alembic_version"} <= tables
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0005"


needs_postgres = pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set")


def waits_for_the_migration_lock(store: Store, application_name: str) -> bool:
    """Whether the session named `application_name` waits for MIGRATION_LOCK (other sessions may too: the
    lock is the database's, and tests in other workers migrate their own schemas)."""
    query = (
        "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid) WHERE locktype = 'advisory'"
        " AND objid = :key AND NOT granted AND application_name = :name"
    )
    with store.engine.connect() as connection:
        return connection.execute(text(query), {"key": MIGRATION_LOCK, "name": application_name}).scalar_one() == 1


@needs_postgres
def test_a_migration_on_postgresql_waits_for_one_in_progress() -> None:
    """The scale-out receiver's two uvicorn workers migrated a fresh database at once; one failed on
    "relation alembic_version already exists" and took the receiver down. A second migration now waits
    for the first's lock (held here by hand), then finds the schema at head."""
    with fresh_postgres_schema() as url:
        name = f"migrating-{uuid.uuid4().hex[:8]}"
        holder = Store(url)
        migrating = Store(make_url(url).update_query_dict({"application_name": name}).render_as_string(False))
        errors: list[BaseException] = []

        def migrate() -> None:
            try:
                migrating.migrate()
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)

        try:
            with holder.engine.begin() as connection:
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                thread = threading.Thread(target=migrate)
                thread.start()
                poll_until(lambda: waits_for_the_migration_lock(holder, name), timeout=30, what="the migration waits")
                assert thread.is_alive() and "alembic_version" not in inspect(connection).get_table_names()
            thread.join(timeout=60)
            assert not thread.is_alive() and errors == []
            with holder.engine.connect() as connection:
                assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0005"
        finally:
            holder.dispose()
            migrating.dispose()


@needs_postgres
def test_processes_migrating_a_fresh_postgresql_schema_at_once_all_succeed() -> None:
    """As the receiver's workers start: separate processes, each its own engine, released together."""
    code = (
        "import sys, time; from metriport_flows.store import Store; store = Store(sys.argv[1]); "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); store.migrate()"
    )
    with fresh_postgres_schema() as url:
        at = str(time.time() + 3)  # every process has imported the store by then
        processes = [subprocess.Popen([sys.executable, "-c", code, url, at], stderr=subprocess.PIPE) for _ in range(4)]
        try:
            errors = [process.communicate(timeout=120)[1].decode() for process in processes]
        finally:
            for process in processes:
                process.kill()
                process.wait()
        assert [process.returncode for process in processes] == [0] * 4, errors


def test_sqlite_file_is_created_in_its_folder_with_wal(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'nested' / 'deeper' / 'inbox.db'}")
    store.migrate()
    assert (tmp_path / "nested" / "deeper" / "inbox.db").exists()
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
    store.dispose()


def test_insert_is_idempotent_on_message_id(store: Store) -> None:
    message_id = _insert(store, body='{"x":"é"}', patient_id="pat-1", request_id="req-1")
    assert not store.insert_message(message_id=message_id, type="other", body="changed")
    row = store.get_message(message_id)
    assert row.type == "medical.document-download" and row.body == '{"x":"é"}'
    assert row.status == MessageStatus.pending and row.attempts == 0
    assert store.backlog()[0][:2] == ("pending", 1)


def test_claim_gives_each_row_once_and_respects_backoff(store: Store) -> None:
    first, second = _insert(store), _insert(store)
    claimed = store.claim_pending(owner=OWNER, limit=10)
    assert [m.message_id for m in claimed] == [first, second]
    assert all(m.status == MessageStatus.claimed for m in claimed)
    assert store.claim_pending(owner=OWNER, limit=10) == []
    store.retry_message(first, owner=OWNER, status=MessageStatus.error, delay=timedelta(hours=1), error="boom")
    store.retry_message(second, owner=OWNER, status=MessageStatus.error, delay=timedelta(seconds=-1), error="boom")
    assert [m.message_id for m in store.claim_pending(owner=OWNER)] == [second]
    row = store.get_message(first)
    assert row.attempts == 1 and row.last_error == "boom" and row.status == MessageStatus.error


def test_claim_takes_at_most_limit_rows_oldest_first(store: Store) -> None:
    ids = [_insert(store) for _ in range(5)]
    assert [m.message_id for m in store.claim_pending(owner=OWNER, limit=1)] == ids[:1]
    assert [m.message_id for m in store.claim_pending(owner=OWNER, limit=2)] == ids[1:3]
    assert [m.message_id for m in store.claim_pending(owner=OWNER, limit=5)] == ids[3:]


def test_a_killed_dispatchers_rows_come_back_within_a_minute(store: Store) -> None:
    """A receiver SIGKILLed between claiming a row and finishing it left the row to its 5-minute lease:
    a chaos run that killed it there found two messages still claimed when everything else had settled.
    A live dispatcher extends its claims every third of the lease, so the lease can be short."""
    orphan = _insert(store)
    assert [m.message_id for m in store.claim_pending(owner="killed", limit=1)] == [orphan]
    assert store.claim_pending(owner="next") == []
    in_a_minute = utcnow() + timedelta(minutes=1)
    assert [m.message_id for m in store.claim_pending(owner="next", now=in_a_minute)] == [orphan]


def test_a_live_owners_claim_is_never_taken_over_and_a_dead_owners_is_after_its_lease(store: Store) -> None:
    live, dead = _insert(store), _insert(store)
    lease = timedelta(minutes=5)
    assert [m.message_id for m in store.claim_pending(owner="live", limit=1, lease=lease)] == [live]
    assert [m.message_id for m in store.claim_pending(owner="dead", limit=1, lease=lease)] == [dead]

    slow = utcnow() + timedelta(seconds=61)  # past the old 60 s "stuck" rule, well inside the lease
    assert store.claim_pending(owner="other", now=slow) == []
    assert store.stuck_messages(slow, timedelta(seconds=60)) == []
    assert not store.requeue_message(live), "replay never steals a row its owner still holds"
    assert not store.finish_message(live, owner="other", detail="stolen")
    assert not store.retry_message(live, owner="other", status=MessageStatus.unmatched, delay=timedelta(0))
    row = store.get_message(live)
    assert (row.status, row.claimed_by, row.detail, row.attempts) == (MessageStatus.claimed, "live", None, 0)

    assert store.extend_claims([live, dead], owner="live", lease=timedelta(minutes=10)) == 1  # its heartbeat
    expired = utcnow() + lease + timedelta(seconds=1)
    assert [m.message_id for m in store.stuck_messages(expired, timedelta(seconds=60))] == [dead]
    assert [m.message_id for m in store.claim_pending(owner="other", now=expired)] == [dead]
    assert not store.finish_message(dead, owner="dead"), "the dead owner lost its claim"
    assert store.finish_message(dead, owner="other")
    assert store.finish_message(live, owner="live", detail="resolved")
    assert {row.message_id: row.status for row in store.list_messages()} == {live: "done", dead: "done"}


def test_two_threads_never_claim_the_same_row(store: Store) -> None:
    ids = {_insert(store) for _ in range(120)}
    claimed: dict[str, list[str]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            barrier.wait()
            while batch := store.claim_pending(owner=OWNER, limit=7):
                claimed[name].extend(m.message_id for m in batch)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    every = claimed["a"] + claimed["b"]
    assert len(every) == len(set(every)) == 120 and set(every) == ids


def test_register_wait_is_idempotent_and_wakes_unmatched_messages(store: Store) -> None:
    waiting = _insert(store, patient_id="pat-w")
    by_request = _insert(store, request_id="req-w")
    assert len(store.claim_pending(owner=OWNER)) == 2
    for message_id in (waiting, by_request):
        store.retry_message(message_id, owner=OWNER, status=MessageStatus.unmatched, delay=timedelta(hours=1))
    assert store.claim_pending(owner=OWNER) == []
    run = str(uuid.uuid4())
    wait = _register(store, flow_run_id=run, patient_id="pat-w")
    assert wait.pause_key == "documents-1" and wait.status == WaitStatus.open
    assert [m.message_id for m in store.claim_pending(owner=OWNER)] == [waiting]
    again = _register(store, flow_run_id=run, patient_id="pat-w", request_id="req-w")
    assert again.id == wait.id and store.get_wait(wait.id).request_id == "req-w"
    assert [m.message_id for m in store.claim_pending(owner=OWNER)] == [by_request]
    assert _register(store, flow_run_id=run, attempt=2).pause_key == "documents-2"
    assert [w.attempt for w in store.waits_for_run(run)] == [1, 2]
    assert store.latest_wait_for_run(run, "documents").attempt == 2


def test_resolve_wait_is_compare_and_set(store: Store) -> None:
    wait = _register(store)
    results = []
    barrier = threading.Barrier(4)

    def resolve(n: int) -> None:
        barrier.wait()
        results.append(store.resolve_wait(wait.id, DocumentsReady(outcome=Outcome.ready, documents=n)))

    threads = [threading.Thread(target=resolve, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, False, False, True]
    resolved = store.get_wait(wait.id)
    assert resolved.status == WaitStatus.resolved and resolved.outcome == "ready"
    assert isinstance(resolved.result_model(), DocumentsReady)
    assert [w.id for w in store.undelivered_waits()] == [wait.id]
    assert store.mark_wait_delivered(wait.id) and not store.mark_wait_delivered(wait.id)
    assert store.undelivered_waits() == []
    assert store.mark_wait_consumed(wait.id)
    assert not store.resolve_wait(wait.id, DocumentsReady(outcome=Outcome.failed))


def test_a_plain_stage_result_is_stored_as_the_stage_model(store: Store) -> None:
    wait = _register(store, stage="consolidated")
    assert store.resolve_wait(wait.id, StageResult(outcome=Outcome.timeout, resolved_by="reconciler"))
    stored = store.get_wait(wait.id)
    result = stored.result_model() if stored is not None else None
    assert isinstance(result, ConsolidatedReady) and result.outcome == Outcome.timeout
    assert result.model_dump(mode="json")["resolved_by"] == "reconciler"


def test_delivery_backoff_and_consumed(store: Store) -> None:
    wait = _register(store)
    store.resolve_wait(wait.id, DocumentsReady(outcome=Outcome.ready))
    store.retry_delivery(wait.id, error="not paused", delay=timedelta(hours=1))
    assert store.undelivered_waits() == []
    assert [w.id for w in store.undelivered_waits(due_only=False)] == [wait.id]
    assert store.get_wait(wait.id).delivery_attempts == 1
    assert store.mark_wait_consumed(wait.id)
    assert store.undelivered_waits(due_only=False) == [] and store.get_wait(wait.id).consumed_at


def test_deadlines_and_lookups(store: Store) -> None:
    late = _register(store, soft=-1, patient_id="pat-d", request_id="req-d")
    _register(store, soft=600, patient_id="pat-d", stage="consolidated")
    assert [w.id for w in store.waits_past_soft_deadline()] == [late.id]
    assert store.waits_past_hard_deadline() == []
    assert [w.id for w in store.waits_past_hard_deadline(utcnow() + timedelta(hours=7))] != []
    assert store.waits_for_request("req-d")[0].id == late.id
    assert store.waits_for_request("req-d", stage="consolidated") == []
    assert store.latest_wait_for_patient("pat-d", "documents").id == late.id
    assert len(store.open_waits()) == 2
    store.note_wait_progress(late.id, {"documents": 7})
    store.note_wait_progress(late.id, {"convertible": 1})
    assert store.get_wait(late.id).progress == {"documents": 7, "convertible": 1}


def test_finish_requeue_orphan_and_purge(store: Store) -> None:
    done, stale = _insert(store), _insert(store, received_at=utcnow() - timedelta(days=2))
    store.claim_pending(owner=OWNER)
    store.finish_message(done, owner=OWNER, wait_id="w-1", detail="resolved")
    store.retry_message(stale, owner=OWNER, status=MessageStatus.unmatched, delay=timedelta(hours=1))
    assert store.orphan_unmatched(timedelta(days=1)) == 1
    assert store.get_message(stale).status == MessageStatus.orphan
    assert store.purge_bodies(timedelta(days=1)) == 1
    assert store.get_message(stale).body is None and store.get_message(done).body is not None
    assert store.purge_bodies(timedelta(0)) == 1
    assert store.requeue_message(done) and not store.requeue_message("nope")
    assert [m.message_id for m in store.claim_pending(owner=OWNER)] == [done]
    assert dict((s, n) for s, n, _ in store.backlog()) == {"claimed": 1, "orphan": 1}


def test_heartbeat_upsert(store: Store) -> None:
    assert store.get_heartbeat("dispatcher") is None
    store.record_heartbeat("dispatcher", {"claimed": 1})
    store.record_heartbeat("dispatcher", {"claimed": 2})
    beat = store.get_heartbeat("dispatcher")
    assert beat.detail == {"claimed": 2} and beat.at <= utcnow()


@pytest.mark.parametrize("message_id", ["m-\x00", "m-\ud800", "m" * 201])
def test_an_id_no_row_can_have_is_simply_not_found(store: Store, message_id: str) -> None:
    assert store.get_message(message_id) is None
