"""Dispatcher unit tests: messages put straight into a real store, Prefect as a recording gateway.

Covers correlation (requestId, flowRunId, patient), the documents stage's rules, messages before their
wait, late duplicates, handler failures, delivery races and the events emitted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from metriport_flows.client.api import MedicalApi
from metriport_flows.client.messages import DocumentConversionMessage
from metriport_flows.client.signing import compact_json
from metriport_flows.domain.stages import DocumentsReady, Outcome, ResolvedBy, Stage, StageResult
from metriport_flows.store import MessageStatus, Store, WaitStatus, utcnow
from metriport_flows.store.inbox import NewMessage
from metriport_flows.webhook.delivery import Delivery, deliver_due, deliver_wait
from metriport_flows.webhook.dispatcher import HEARTBEAT, Dispatcher
from metriport_flows.webhook.events import (
    WAIT_DELIVERED,
    WAIT_RESOLVED,
    message_event_id,
)
from metriport_flows.webhook.handlers import metriport_router
from metriport_flows.webhook.inbox_writer import InboxWriter
from metriport_flows.webhook.protocols import ResumeAnswer, RunView
from metriport_flows.webhook.router import HandlerContext, Router
from tests.fixtures.emulator import api_key_for
from tests.fixtures.inbox import (
    RecordingGateway,
    conversion_message,
    download_message,
    make_settings,
    pdf_document,
    xml_document,
)


@pytest.fixture
def gateway() -> RecordingGateway:
    return RecordingGateway()


@pytest.fixture
async def dispatcher(store: Store, tmp_path: Path, gateway: RecordingGateway, emulator_app) -> Dispatcher:
    """Metriport is the in-process emulator: its GET /document/query answers `{}` for these patients."""
    transport = httpx.ASGITransport(app=emulator_app)
    async with MedicalApi("http://emulator", api_key_for("dispatcher-tests"), transport=transport) as api:
        yield Dispatcher(store, make_settings(tmp_path, store), gateway, api, metriport_router())


def put(store: Store, message: dict) -> str:
    meta = message["meta"]
    patient = (message.get("patients") or [{}])[0].get("patientId")
    data = meta.get("data") or {}
    assert store.insert_message(
        message_id=meta["messageId"],
        type=meta["type"],
        body=compact_json(message),
        request_id=meta.get("requestId"),
        patient_id=patient,
        flow_run_id=data.get("flowRunId"),
        stage=data.get("stage"),
    )
    return meta["messageId"]


def wait_for(
    store: Store,
    patient_id: str,
    *,
    stage: str = "documents",
    request_id: str | None = None,
    flow_run_id: str | None = None,
    attempt: int = 1,
):
    return store.register_wait(
        flow_run_id=flow_run_id or str(uuid.uuid4()),
        stage=stage,
        attempt=attempt,
        patient_id=patient_id,
        soft_deadline=utcnow() + timedelta(minutes=10),
        hard_deadline=utcnow() + timedelta(hours=6),
        request_id=request_id,
    )


async def test_correlation_by_request_id(store: Store, dispatcher: Dispatcher) -> None:
    wait = wait_for(store, "pat-r", request_id="req-r")
    other = wait_for(store, "pat-r", stage="consolidated")
    message_id = put(store, conversion_message("pat-r", request_id="req-r"))
    assert await dispatcher.dispatch_once() == 1
    resolved = store.get_wait(wait.id)
    assert resolved.status == WaitStatus.resolved and store.get_wait(other.id).status == WaitStatus.open
    result = resolved.result_model()
    assert (result.outcome, result.message_id, result.request_id, result.resolved_by) == (
        Outcome.ready,
        message_id,
        "req-r",
        ResolvedBy.webhook,
    )
    row = store.get_message(message_id)
    assert row.status == MessageStatus.done and row.wait_id == wait.id


async def test_correlation_without_request_id_by_flow_run_id(store: Store, dispatcher: Dispatcher) -> None:
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    wait_for(store, "pat-f", flow_run_id=theirs)
    wait = wait_for(store, "pat-f", flow_run_id=mine, request_id="req-f")
    # the sandbox's conversion message: no meta.requestId, the patient's metadata in meta.data
    put(store, conversion_message("pat-f", data={"flowRunId": mine, "stage": "documents"}))
    await dispatcher.dispatch_once()
    assert store.get_wait(wait.id).status == WaitStatus.resolved
    assert [w.status for w in store.waits_for_run(theirs)] == [WaitStatus.open]


async def test_correlation_by_patient_when_nothing_else_is_there(store: Store, dispatcher: Dispatcher) -> None:
    wait = wait_for(store, "pat-p")
    put(store, conversion_message("pat-p"))  # a retried message: no requestId, no meta.data
    await dispatcher.dispatch_once()
    assert store.get_wait(wait.id).status == WaitStatus.resolved


async def test_a_different_request_id_never_matches(store: Store, dispatcher: Dispatcher) -> None:
    wait = wait_for(store, "pat-x", request_id="req-mine")
    message_id = put(store, conversion_message("pat-x", request_id="req-other"))
    await dispatcher.dispatch_once()
    assert store.get_wait(wait.id).status == WaitStatus.open
    assert store.get_message(message_id).status == MessageStatus.unmatched


async def test_a_message_before_its_wait_knows_the_request_id_waits_for_it(
    store: Store, dispatcher: Dispatcher
) -> None:
    wait = wait_for(store, "pat-early")  # registered; the start call has not returned yet
    message_id = put(store, conversion_message("pat-early", request_id="req-early"))
    assert await dispatcher.dispatch_once() == 1
    row = store.get_message(message_id)
    assert row.status == MessageStatus.unmatched and row.attempts == 1
    assert await dispatcher.dispatch_once() == 0  # backing off
    store.set_wait_request_id(wait.id, "req-early")  # wakes it at once
    assert await dispatcher.dispatch_once() == 1
    assert store.get_wait(wait.id).result_model().message_id == message_id
    assert store.get_message(message_id).status == MessageStatus.done


async def test_download_with_xml_records_counts_and_conversion_resolves(store: Store, dispatcher: Dispatcher) -> None:
    wait = wait_for(store, "pat-d", request_id="req-d")
    put(
        store,
        download_message(
            "pat-d", documents=[xml_document(), pdf_document(), pdf_document("demo3.pdf")], request_id="req-d"
        ),
    )
    await dispatcher.dispatch_once()
    assert store.get_wait(wait.id).status == WaitStatus.open
    assert store.get_wait(wait.id).progress == {"documents": 3, "convertible": 1}
    put(store, conversion_message("pat-d"))
    await dispatcher.dispatch_once()
    result = store.get_wait(wait.id).result_model()
    assert (result.outcome, result.documents, result.converted) == (Outcome.ready, 3, 1)


@pytest.mark.parametrize("failing", ["download", "conversion"])
async def test_failed_download_or_conversion_fails_the_stage(
    store: Store, dispatcher: Dispatcher, failing: str
) -> None:
    wait = wait_for(store, "pat-fail", request_id="req-fail")
    make = download_message if failing == "download" else conversion_message
    put(store, make("pat-fail", status="failed", request_id="req-fail"))
    await dispatcher.dispatch_once()
    result = store.get_wait(wait.id).result_model()
    assert result.outcome == Outcome.failed and failing in result.detail


async def test_late_duplicates_are_recorded_and_never_resolve_twice(
    store: Store, dispatcher: Dispatcher, gateway: RecordingGateway
) -> None:
    wait = wait_for(store, "pat-dup", request_id="req-dup")
    first = put(store, conversion_message("pat-dup", request_id="req-dup"))
    await dispatcher.dispatch_once()
    late = put(store, conversion_message("pat-dup", status="failed", request_id="req-dup"))
    await dispatcher.dispatch_once()
    result = store.get_wait(wait.id).result_model()
    assert result.outcome == Outcome.ready and result.message_id == first
    row = store.get_message(late)
    assert row.status == MessageStatus.done and row.detail.startswith("late") and row.wait_id == wait.id
    assert sum(1 for e in gateway.events if e.event == WAIT_RESOLVED) == 1


async def test_a_failing_handler_keeps_the_message_with_backoff(store: Store, dispatcher: Dispatcher) -> None:
    too_long_for_a_file_name = "é" * 101
    wait_for(store, "pat-err", stage="consolidated", request_id=too_long_for_a_file_name)
    bad = {
        "meta": {
            "messageId": str(uuid.uuid4()),
            "requestId": too_long_for_a_file_name,
            "type": "medical.consolidated-data",
        },
        "patients": [
            {
                "patientId": "pat-err",
                "status": "completed",
                "bundle": {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "total": 1,
                    "entry": [
                        {
                            "resource": {
                                "resourceType": "DocumentReference",
                                "content": [{"contentType": "application/json", "url": "http://127.0.0.1:9/x"}],
                            }
                        }
                    ],
                },
            }
        ],
    }
    message_id = put(store, bad)
    await dispatcher.dispatch_once()
    row = store.get_message(message_id)
    assert row.status == MessageStatus.error and row.attempts == 1 and "UnsafeName" in row.last_error
    assert row.next_attempt_at > utcnow() and row.body is not None


async def test_unknown_and_unparseable_messages_are_recorded(
    store: Store, dispatcher: Dispatcher, gateway: RecordingGateway
) -> None:
    unknown = put(store, {"meta": {"messageId": str(uuid.uuid4()), "type": "network-query.hie"}})
    await dispatcher.dispatch_once()
    assert store.get_message(unknown).status == MessageStatus.done
    assert gateway.events[-1].id == message_event_id(unknown)
    assert gateway.events[-1].event == "metriport.network-query.hie"


async def test_events_carry_ids_only_and_relate_to_the_run(
    store: Store, dispatcher: Dispatcher, gateway: RecordingGateway
) -> None:
    wait = wait_for(store, "pat-ev", request_id="req-ev")
    message_id = put(store, conversion_message("pat-ev", request_id="req-ev"))
    await dispatcher.dispatch_once()
    message_event, resolved_event = gateway.events[0], gateway.events[1]
    assert message_event.id == uuid.uuid5(uuid.NAMESPACE_URL, "metriport:" + message_id)
    assert message_event.event == "metriport.medical.document-conversion"
    assert message_event.resource == {
        "prefect.resource.id": f"metriport.message.{message_id}",
        "metriport.patient-id": "pat-ev",
        "metriport.request-id": "req-ev",
        "metriport.message-type": "medical.document-conversion",
    }
    assert message_event.related == [
        {"prefect.resource.id": f"prefect.flow-run.{wait.flow_run_id}", "prefect.resource.role": "flow-run"}
    ]
    assert resolved_event.event == WAIT_RESOLVED and resolved_event.related == message_event.related


async def test_delivery_resumes_only_a_run_paused_on_the_wait_key(
    store: Store, dispatcher: Dispatcher, gateway: RecordingGateway
) -> None:
    wait = wait_for(store, "pat-del", request_id="req-del", attempt=2)
    gateway.runs[wait.flow_run_id] = RunView("PAUSED", "Suspended", "documents-1")
    put(store, conversion_message("pat-del", request_id="req-del"))
    await dispatcher.dispatch_once()
    assert gateway.resumes == [] and store.get_wait(wait.id).delivery_attempts == 1

    gateway.runs[wait.flow_run_id] = RunView("PAUSED", "Suspended", "documents-2")
    assert await deliver_wait(store, gateway, wait.id) == Delivery.delivered
    [(run_id, run_input)] = gateway.resumes
    assert run_id == wait.flow_run_id and run_input["outcome"] == "ready" and run_input["request_id"] == "req-del"
    assert store.get_wait(wait.id).status == WaitStatus.delivered
    assert gateway.events[-1].event == WAIT_DELIVERED
    assert await deliver_due(store, gateway) == {}


async def test_delivery_races_running_abort_and_consumed(
    store: Store, dispatcher: Dispatcher, gateway: RecordingGateway
) -> None:
    wait = wait_for(store, "pat-race", request_id="req-race")
    gateway.runs[wait.flow_run_id] = RunView("RUNNING", "Running", None)
    put(store, conversion_message("pat-race", request_id="req-race"))
    await dispatcher.dispatch_once()
    assert store.get_wait(wait.id).status == WaitStatus.resolved and gateway.resumes == []

    gateway.runs[wait.flow_run_id] = RunView("PAUSED", "Suspended", wait.pause_key)
    gateway.answers[wait.flow_run_id] = "ABORT"  # resumed by someone else meanwhile
    assert await deliver_wait(store, gateway, wait.id) == Delivery.later
    assert "ABORT" in store.get_wait(wait.id).last_delivery_error

    assert store.mark_wait_consumed(wait.id)  # the run read it itself
    assert await deliver_wait(store, gateway, wait.id) == Delivery.consumed
    assert store.undelivered_waits(due_only=False) == [] and len(gateway.resumes) == 1


async def test_a_slow_handler_keeps_its_claim_past_the_lease_by_extending_it(
    store: Store, dispatcher: Dispatcher, gateway: RecordingGateway
) -> None:
    """The dispatcher's heartbeat extends the lease while the handler works: nobody else can claim the
    row, however long the handler takes, and the message is handled once."""
    handled: list[str] = []
    router = Router()

    @router.register("medical.document-conversion", stage=Stage.documents)
    async def slow_conversion(message: DocumentConversionMessage, ctx: HandlerContext) -> DocumentsReady:
        handled.append(message.message_id)
        await asyncio.sleep(3)  # the handler's work: three leases long
        return DocumentsReady(outcome=Outcome.ready)

    slow = Dispatcher(store, dispatcher.settings, gateway, dispatcher.api, router, lease=timedelta(seconds=1))
    wait = wait_for(store, "pat-slow", request_id="req-slow")
    message_id = put(store, conversion_message("pat-slow", request_id="req-slow"))
    work = asyncio.create_task(slow.dispatch_once())
    while not handled:
        await asyncio.sleep(0.01)
    taken: list[str] = []
    while not work.done():
        taken += [row.message_id for row in await asyncio.to_thread(store.claim_pending, owner="reconciler")]
        await asyncio.sleep(0.1)
    assert await work == 1
    assert taken == [] and handled == [message_id]
    assert store.get_message(message_id).status == MessageStatus.done
    assert store.get_wait(wait.id).status == WaitStatus.resolved


async def test_an_old_or_foreign_message_never_ends_a_new_runs_wait(
    store: Store, dispatcher: Dispatcher, gateway: RecordingGateway
) -> None:
    """A bulk import's document query for this patient finished before a cohort run started its own: its
    conversion message (another request id), and one from before the run without a request id, are not
    the new run's answer; the new query's message is, with or without a request id (the sandbox's)."""
    an_hour_ago = utcnow() - timedelta(hours=1)
    foreign = put(store, conversion_message("pat-new", request_id="req-bulk-import", when=an_hour_ago))
    old = put(store, conversion_message("pat-new", when=an_hour_ago))
    assert await dispatcher.dispatch_once() == 2  # no wait yet: both unmatched

    wait = wait_for(store, "pat-new")  # registered before the start call: no request id yet
    assert await dispatcher.dispatch_once() == 2, "registering woke the patient's unmatched messages"
    store.set_wait_request_id(wait.id, "req-cohort")
    await dispatcher.dispatch_once()
    assert store.get_wait(wait.id).status == WaitStatus.open and gateway.resumes == []
    assert {store.get_message(m).status for m in (foreign, old)} == {MessageStatus.unmatched}

    put(store, conversion_message("pat-new"))  # the sandbox's: no requestId, sent after the start call
    await dispatcher.dispatch_once()
    resolved = store.get_wait(wait.id)
    assert resolved.status == WaitStatus.resolved and resolved.result_model().request_id == "req-cohort"


class HotWindowZeroGateway(RecordingGateway):
    """A run that, once resumed, suspends at once on its next stage's key (a hot window of 0); each
    resume takes Prefect's round trip."""

    async def resume(self, flow_run_id: str, run_input: StageResult) -> ResumeAnswer:
        self.resumes.append((str(flow_run_id), run_input.model_dump(mode="json")))
        await asyncio.sleep(0.05)
        self.runs[str(flow_run_id)] = RunView("PAUSED", "Suspended", "consolidated-1")
        return ResumeAnswer("ACCEPT")


async def test_concurrent_deliveries_of_one_wait_resume_the_run_once(store: Store, dispatcher: Dispatcher) -> None:
    gateway = HotWindowZeroGateway()
    wait = wait_for(store, "pat-twice", request_id="req-twice")
    assert store.resolve_wait(wait.id, DocumentsReady(outcome=Outcome.ready, request_id="req-twice"))
    gateway.runs[wait.flow_run_id] = RunView("PAUSED", "Suspended", wait.pause_key)

    outcomes = await asyncio.gather(
        deliver_wait(store, gateway, wait.id),  # the dispatcher, right after resolving
        deliver_wait(store, gateway, wait.id),  # the reconciler's delivery pass
        deliver_due(store, gateway),  # another dispatcher's delivery pass
    )
    assert len(gateway.resumes) == 1, "the second resume would have ended the consolidated suspend"
    direct, due = outcomes[:2], outcomes[2]
    assert direct.count(Delivery.delivered) + due.get(Delivery.delivered.value, 0) == 1
    assert store.get_wait(wait.id).status == WaitStatus.delivered
    assert await deliver_wait(store, gateway, wait.id) == Delivery.delivered and len(gateway.resumes) == 1


async def test_an_unparseable_notification_is_recorded_not_retried(
    store: Store, dispatcher: Dispatcher, gateway: RecordingGateway
) -> None:
    bad = put(store, {"meta": {"messageId": str(uuid.uuid4()), "type": "patient.admit"}, "payload": "not an object"})
    await dispatcher.dispatch_once()
    row = store.get_message(bad)
    assert row.status == MessageStatus.done and row.attempts == 0 and "unparseable" in (row.detail or "")
    assert gateway.events[-1].id == message_event_id(bad)


async def until(condition: Callable[[], bool], seconds: float) -> bool:
    """True as soon as `condition` holds, False if it still does not after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_message_the_receiver_stores_is_dispatched_at_once_not_at_the_next_poll(
    store: Store, dispatcher: Dispatcher, gateway: RecordingGateway
) -> None:
    """Within the hot window every poll interval is added to the webhook-to-code time."""
    slow_poll = dispatcher.settings.model_copy(update={"dispatcher_poll_seconds": 60.0})
    new_messages = asyncio.Event()
    running = Dispatcher(store, slow_poll, gateway, dispatcher.api, metriport_router(), new_messages=new_messages)
    writer, stop = InboxWriter(store, on_new=new_messages.set), asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    try:
        assert await until(lambda: store.get_heartbeat(HEARTBEAT) is not None, 30), "no first dispatcher pass"
        message = download_message("pat-at-once", request_id=str(uuid.uuid4()))
        body = compact_json(message)
        stored = NewMessage(message["meta"]["messageId"], message["meta"]["type"], body, patient_id="pat-at-once")
        assert await writer.store_message(stored)

        def handled() -> bool:
            row = store.get_message(stored.message_id)
            return row is not None and row.status != MessageStatus.pending

        assert await until(handled, 10), "the new message waited for the dispatcher's poll"
    finally:
        stop.set()
        await task
        await writer.close()
