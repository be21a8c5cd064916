"""Reconciler tests: a real store (SQLite and, when set, PostgreSQL), the emulator in-process (ASGI) as
Metriport, and Prefect as a recording gateway whose runs are suspended on the waits' pause keys.

Each test leaves the emulator's webhooks undeliverable (no webhook URL set, so every send is recorded as
a failure, as Metriport does) unless it is about webhooks, so only the reconciler can end the waits.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from metriport_flows.client.api import MedicalApi
from metriport_flows.client.messages import parse_message
from metriport_flows.client.signing import compact_json
from metriport_flows.domain.stages import Outcome, ResolvedBy, Stage, pause_key
from metriport_flows.settings import Settings
from metriport_flows.store import MessageStatus, Store, Wait, WaitStatus, utcnow
from metriport_flows.store.inbox import CLAIM_LEASE
from metriport_flows.webhook.dispatcher import Dispatcher
from metriport_flows.webhook.handlers import metriport_router
from metriport_flows.webhook.protocols import RunView
from metriport_flows.webhook.receiver import create_app as create_receiver
from metriport_flows.webhook.reconciler import (
    HEARTBEAT,
    STUCK_AFTER,
    ReconcileReport,
    reconcile_once,
)
from metriport_sandbox.seed import SEED_PATIENTS
from tests.fixtures.emulator import api_key_for
from tests.fixtures.inbox import (
    RecordingGateway,
    conversion_message,
    make_settings,
    serve,
)
from tests.fixtures.sandbox import FACILITY

EMULATOR = "http://emulator.test"

OWNER = "dispatcher-test"


@dataclass
class Emulator:
    api: MedicalApi
    control: httpx.AsyncClient
    facility_id: str

    async def idle(self) -> None:
        (await self.control.post("/flush", params={"timeout": 30})).raise_for_status()

    async def patient(self, seed: str = "jane") -> str:
        return (await self.api.create_patient(self.facility_id, SEED_PATIENTS[seed].demographics())).id

    async def faults(self, **faults: Any) -> None:
        (await self.control.post("/faults", json=faults)).raise_for_status()


@pytest.fixture
async def emulator(emulator_app) -> AsyncIterator[Emulator]:
    transport = httpx.ASGITransport(app=emulator_app)
    api = MedicalApi(EMULATOR, api_key_for(f"tenant-{uuid.uuid4().hex[:8]}"), transport=transport)
    async with api, httpx.AsyncClient(transport=transport, base_url=f"{EMULATOR}/_sandbox") as control:
        facility = await api.create_facility(FACILITY)
        yield Emulator(api, control, facility.id)


@pytest.fixture
def gateway() -> RecordingGateway:
    return RecordingGateway()


@pytest.fixture
def settings(tmp_path: Path, store: Store) -> Settings:
    return make_settings(tmp_path, store, metriport_base_url=EMULATOR)


def waiting(
    store: Store,
    gateway: RecordingGateway,
    patient_id: str,
    stage: Stage,
    *,
    request_id: str | None = None,
    soft: float = -1,
    hard: float = 3600,
    attempt: int = 1,
) -> Wait:
    """A wait whose run is suspended on its pause key; deadlines in seconds from now (negative: passed)."""
    now = utcnow()
    wait = store.register_wait(
        flow_run_id=str(uuid.uuid4()),
        stage=stage,
        attempt=attempt,
        patient_id=patient_id,
        soft_deadline=now + timedelta(seconds=soft),
        hard_deadline=now + timedelta(seconds=hard),
        request_id=request_id,
    )
    gateway.runs[wait.flow_run_id] = RunView("PAUSED", "Suspended", pause_key(stage, attempt))
    return wait


async def documents_done(emulator: Emulator, seed: str = "jane") -> tuple[str, str]:
    """A patient whose document query has finished (its webhooks failed: no URL is set)."""
    patient_id = await emulator.patient(seed)
    started = await emulator.api.start_document_query(patient_id, emulator.facility_id)
    await emulator.idle()
    return patient_id, started.request_id


async def reconcile(
    store: Store, emulator: Emulator, gateway: RecordingGateway, settings: Settings, ahead: float = 0
) -> ReconcileReport:
    return await reconcile_once(store, emulator.api, gateway, settings, utcnow() + timedelta(seconds=ahead))


async def test_stuck_pending_and_claimed_rows_are_redispatched(store, emulator, gateway, settings) -> None:
    first, second = (waiting(store, gateway, f"pat-{n}", Stage.documents, soft=600) for n in (1, 2))
    for wait in (first, second):
        message = conversion_message(wait.patient_id)
        assert store.insert_message(
            message_id=message["meta"]["messageId"],
            type=message["meta"]["type"],
            body=compact_json(message),
            patient_id=wait.patient_id,
        )
        if wait is first:
            assert len(store.claim_pending(owner=OWNER)) == 1  # a dispatcher that crashed holding this row

    calm = await reconcile(store, emulator, gateway, settings)
    assert (calm.messages_requeued, calm.messages_dispatched) == (0, 0), "nothing is stuck yet"

    stuck = max(CLAIM_LEASE, STUCK_AFTER)  # the claimed row's lease and the pending row's stuck rule
    report = await reconcile(store, emulator, gateway, settings, ahead=stuck.total_seconds() + 1)
    assert (report.messages_requeued, report.messages_dispatched) == (2, 2)
    for wait in (first, second):
        done = store.get_wait(wait.id)
        assert done.status == WaitStatus.delivered
        assert done.result_model().resolved_by == ResolvedBy.webhook
    assert {row.status for row in store.list_messages()} == {MessageStatus.done.value}
    assert sorted(run for run, _ in gateway.resumes) == sorted([first.flow_run_id, second.flow_run_id])


async def test_a_row_its_dispatcher_is_still_working_on_is_never_taken_over(store, emulator, gateway, settings) -> None:
    wait = waiting(store, gateway, "pat-slow", Stage.documents, soft=600)
    message = conversion_message(wait.patient_id)
    assert store.insert_message(
        message_id=message["meta"]["messageId"],
        type=message["meta"]["type"],
        body=compact_json(message),
        patient_id=wait.patient_id,
    )
    # a slow download still under way: its dispatcher keeps extending the lease
    assert len(store.claim_pending(owner="live-dispatcher", lease=timedelta(minutes=5))) == 1

    report = await reconcile(store, emulator, gateway, settings, ahead=61)
    assert (report.messages_requeued, report.messages_dispatched) == (0, 0)
    row = store.get_message(message["meta"]["messageId"])
    assert (row.status, row.claimed_by) == (MessageStatus.claimed, "live-dispatcher")
    assert store.get_wait(wait.id).status == WaitStatus.open and gateway.resumes == []


async def test_documents_wait_past_soft_deadline_resolved_from_status(store, emulator, gateway, settings) -> None:
    patient_id, request_id = await documents_done(emulator)
    early = waiting(store, gateway, patient_id, Stage.documents, request_id=request_id, soft=600)
    assert (await reconcile(store, emulator, gateway, settings)).waits_checked == 0, "soft deadline not passed"

    report = await reconcile(store, emulator, gateway, settings, ahead=601)
    assert (report.waits_checked, report.resolved_ready, report.delivered) == (1, 1, 1)
    wait = store.get_wait(early.id)
    result = wait.result_model()
    assert (wait.status, result.outcome, result.resolved_by, result.request_id) == (
        WaitStatus.delivered,
        Outcome.ready,
        ResolvedBy.reconciler,
        request_id,
    )
    assert (result.documents, result.converted) == (7, 1)
    assert gateway.resumes == [(early.flow_run_id, result.model_dump(mode="json"))]
    heartbeat = store.get_heartbeat(HEARTBEAT)
    assert heartbeat.detail["resolved_ready"] == 1 and heartbeat.detail["waits_checked"] == 1


async def test_stuck_query_stays_open_until_the_hard_deadline_times_it_out(store, emulator, gateway, settings) -> None:
    patient_id = await emulator.patient("chris")
    await emulator.faults(stuck_patients=[patient_id])
    started = await emulator.api.start_document_query(patient_id, emulator.facility_id)
    wait = waiting(store, gateway, patient_id, Stage.documents, request_id=started.request_id, hard=60)

    report = await reconcile(store, emulator, gateway, settings)
    assert (report.waits_checked, report.still_processing, report.resolved) == (1, 1, 0)
    assert store.get_wait(wait.id).status == WaitStatus.open

    report = await reconcile(store, emulator, gateway, settings, ahead=61)
    assert (report.still_processing, report.timed_out, report.delivered) == (1, 1, 1)
    result = store.get_wait(wait.id).result_model()
    assert (result.outcome, result.resolved_by) == (Outcome.timeout, ResolvedBy.reconciler)
    assert "hard deadline" in result.detail and "documents" in result.detail


async def test_consolidated_past_soft_deadline_is_fetched_from_the_stored_webhook(
    store, emulator, gateway, settings
) -> None:
    patient_id, _ = await documents_done(emulator)
    query = await emulator.api.start_consolidated_query(patient_id, "json")
    await emulator.idle()
    wait = waiting(store, gateway, patient_id, Stage.consolidated, request_id=query.request_id)

    report = await reconcile(store, emulator, gateway, settings)
    assert (report.resolved_ready, report.delivered) == (1, 1)
    result = store.get_wait(wait.id).result_model()
    assert (result.outcome, result.resolved_by, result.empty) == (Outcome.ready, ResolvedBy.reconciler, False)
    stored = Path(result.bundle_path)
    assert stored == settings.bundle_dir / patient_id / f"{query.request_id}.json"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == result.sha256
    assert stored.stat().st_size == result.size_bytes and stored.stat().st_mode & 0o777 == 0o600


async def test_a_wait_whose_bundle_folder_cannot_be_made_never_stops_the_pass(
    store, emulator, gateway, tmp_path
) -> None:
    not_a_folder = tmp_path / "bundles-file"
    not_a_folder.write_text("a file where the bundle folder should be")
    settings = make_settings(tmp_path, store, metriport_base_url=EMULATOR, bundle_dir=not_a_folder)
    patient_id, _ = await documents_done(emulator)
    query = await emulator.api.start_consolidated_query(patient_id, "json")
    await emulator.idle()
    broken = waiting(store, gateway, patient_id, Stage.consolidated, request_id=query.request_id)
    stuck = await stuck_documents_wait(store, emulator, gateway)

    report = await reconcile(store, emulator, gateway, settings)
    assert (report.waits_checked, report.wait_errors, report.timed_out, report.delivered) == (2, 1, 1, 1)
    assert store.get_wait(stuck.id).result_model().outcome == Outcome.timeout
    kept = store.get_wait(broken.id)
    assert kept.status == WaitStatus.open and kept.last_check_error.startswith(("FileExistsError", "NotADirectory"))


async def test_a_proxy_page_answering_200_never_stops_the_pass(store, emulator, gateway, settings) -> None:
    html = httpx.MockTransport(
        lambda _request: httpx.Response(
            200, text="<html>Sign in to the proxy</html>", headers={"content-type": "text/html"}
        )
    )
    proxied = waiting(store, gateway, "pat-proxied", Stage.documents, request_id="req-proxied")
    stuck = await stuck_documents_wait(store, emulator, gateway)
    async with MedicalApi("http://proxy.test", "key", transport=html) as proxy:
        report = await reconcile_once(store, proxy, gateway, settings, utcnow())
    assert (report.wait_errors, report.timed_out, report.delivered) == (2, 1, 1)  # both waits' checks raised
    assert store.get_wait(stuck.id).result_model().outcome == Outcome.timeout
    assert store.get_wait(proxied.id).last_check_error.startswith("JSONDecodeError")
    assert report.step_errors == 1, "the webhook-status look failed too; the pass went on"


async def stuck_documents_wait(store: Store, emulator: Emulator, gateway: RecordingGateway) -> Wait:
    """A documents wait past its hard deadline whose query never finishes: only a timeout ends it."""
    patient_id = await emulator.patient("chris")
    await emulator.faults(stuck_patients=[patient_id])
    started = await emulator.api.start_document_query(patient_id, emulator.facility_id)
    return waiting(store, gateway, patient_id, Stage.documents, request_id=started.request_id, hard=-1)


async def test_expired_bundle_url_resolves_expired_so_the_flow_re_requests(store, emulator, gateway, settings) -> None:
    patient_id, _ = await documents_done(emulator)
    await emulator.faults(url_lifetime=0)
    query = await emulator.api.start_consolidated_query(patient_id, "json")
    await emulator.idle()
    wait = waiting(store, gateway, patient_id, Stage.consolidated, request_id=query.request_id)

    report = await reconcile(store, emulator, gateway, settings)
    assert (report.resolved_expired, report.delivered) == (1, 1)
    result = store.get_wait(wait.id).result_model()
    assert (result.outcome, result.request_id) == (Outcome.expired, query.request_id)
    assert not (settings.bundle_dir / patient_id).exists() or not any((settings.bundle_dir / patient_id).iterdir())
    # the flow's next attempt has its own wait and pause key: the reconciler leaves it alone
    retry = waiting(store, gateway, patient_id, Stage.consolidated, attempt=2, soft=600)
    assert pause_key(Stage.consolidated, 2) != wait.pause_key
    again = await reconcile(store, emulator, gateway, settings)
    assert (again.resolved, again.delivered) == (0, 0)
    assert store.get_wait(retry.id).status == WaitStatus.open


async def test_failed_deliveries_are_retried_and_the_resent_messages_correlate(
    store, emulator, gateway, tmp_path
) -> None:
    patient_id = await emulator.patient("ollie")
    wait = waiting(store, gateway, patient_id, Stage.documents, soft=600)  # registered before the start call
    started = await emulator.api.start_document_query(patient_id, emulator.facility_id)
    store.set_wait_request_id(wait.id, started.request_id)
    # Metriport's key exists once a URL is set; the receiver verifies with it, then the URL points at it.
    key = (await emulator.api.update_settings("http://127.0.0.1:9/nowhere")).webhook_key
    settings = make_settings(tmp_path, store, metriport_base_url=EMULATOR, metriport_webhook_key=key)
    with serve(create_receiver(settings, store, run_dispatcher=False)) as receiver_url:
        await emulator.api.update_settings(f"{receiver_url}/metriport/webhook")
        await emulator.idle()
        assert (await emulator.api.get_webhook_status()).webhook_requests_failed == 2

        report = await reconcile_once(store, emulator.api, gateway, settings)
        assert (report.webhooks_failed, report.webhook_retry_requested) == (2, True)
        await emulator.idle()

    rows = {row.type: row for row in store.list_messages()}
    assert set(rows) == {"medical.document-download", "medical.document-conversion"}
    assert all(parse_message(row.body).meta.data is None for row in rows.values()), "retries carry no meta.data"
    assert rows["medical.document-conversion"].request_id is None
    await Dispatcher(store, settings, gateway, emulator.api, metriport_router()).dispatch_once()
    resolved = store.get_wait(wait.id).result_model()
    assert (resolved.outcome, resolved.resolved_by) == (Outcome.ready, ResolvedBy.webhook)
    assert {store.get_message(row.message_id).wait_id for row in rows.values()} == {wait.id}
    assert (await emulator.api.get_webhook_status()).webhook_requests_failed == 0
    assert (await reconcile_once(store, emulator.api, gateway, settings)).webhook_retry_requested is False


async def test_two_passes_resolve_and_resume_once(store, emulator, gateway, settings) -> None:
    patient_id, request_id = await documents_done(emulator, "kyla")
    soft = waiting(store, gateway, patient_id, Stage.documents, request_id=request_id)
    hard = waiting(store, gateway, "pat-silent", Stage.bulk_download, hard=-1)

    reports = await asyncio.gather(*(reconcile(store, emulator, gateway, settings) for _ in range(2)))
    assert sum(r.resolved_ready for r in reports) == 1 and sum(r.timed_out for r in reports) == 1
    later = await reconcile(store, emulator, gateway, settings, ahead=3600)
    assert (later.waits_checked, later.resolved, later.delivered) == (0, 0, 0)
    assert sorted(run for run, _ in gateway.resumes) == sorted([soft.flow_run_id, hard.flow_run_id])
    assert store.get_wait(hard.id).result_model().outcome == Outcome.timeout


async def test_failed_query_and_empty_bundle_are_resolved_from_status(store, emulator, gateway, settings) -> None:
    nobody = (
        await emulator.api.create_patient(
            emulator.facility_id,
            {
                "firstName": "Zed",
                "lastName": "Nobody",
                "dob": "1980-01-01",
                "genderAtBirth": "M",
                "address": [FACILITY["address"]],
            },
        )
    ).id
    query = await emulator.api.start_consolidated_query(nobody, "json")  # no documents: an empty bundle
    failing = await emulator.patient("andreas")
    (await emulator.control.post("/config", json={"mode": "production"})).raise_for_status()  # HIE failures
    await emulator.faults(dq_failed=1.0)
    started = await emulator.api.start_document_query(failing, emulator.facility_id)
    await emulator.idle()
    empty = waiting(store, gateway, nobody, Stage.consolidated, request_id=query.request_id)
    failed = waiting(store, gateway, failing, Stage.documents, request_id=started.request_id)

    report = await reconcile(store, emulator, gateway, settings)
    assert (report.resolved_ready, report.resolved_failed, report.delivered) == (1, 1, 2)
    bundle = store.get_wait(empty.id).result_model()
    assert (bundle.outcome, bundle.empty, bundle.bundle_path) == (Outcome.ready, True, None)
    documents = store.get_wait(failed.id).result_model()
    assert (documents.outcome, documents.resolved_by) == (Outcome.failed, ResolvedBy.reconciler)


async def test_a_wait_whose_run_has_not_asked_metriport_yet_is_left_to_its_run(
    store, emulator, gateway, settings
) -> None:
    """Seen in the chaos run: runs killed with the serve process between registering a wait and the start
    call waited 35 minutes for their revival; the hard deadline failed them though Metriport was never
    asked. An earlier query's answer is not theirs either."""
    patient_id, earlier = await documents_done(emulator)
    wait = waiting(store, gateway, patient_id, Stage.documents, hard=60)
    for state_type, name in (("RUNNING", "Running"), ("SCHEDULED", "Late")):  # towards its start call; revived
        gateway.runs[wait.flow_run_id] = RunView(state_type, name, None)
        report = await reconcile(store, emulator, gateway, settings, ahead=61)
        assert (report.resolved, report.waits_checked, report.not_asked) == (0, 0, 2), report
        assert store.get_wait(wait.id).status == WaitStatus.open

    await emulator.faults(stuck_patients=[patient_id])  # the run's own query never finishes
    started = await emulator.api.start_document_query(patient_id, emulator.facility_id)
    asked_at = utcnow()
    store.set_wait_request_id(wait.id, started.request_id)
    asked = store.get_wait(wait.id)
    assert asked.hard_deadline - asked_at >= timedelta(seconds=59), "the deadlines count from the start call"
    assert asked.soft_deadline - wait.soft_deadline == asked.hard_deadline - wait.hard_deadline
    gateway.runs[wait.flow_run_id] = RunView("PAUSED", "Suspended", wait.pause_key)
    report = await reconcile(store, emulator, gateway, settings, ahead=61)
    assert (report.still_processing, report.timed_out) == (1, 1) and earlier != started.request_id


async def test_a_wait_without_a_request_id_whose_run_is_suspended_on_it_still_times_out(
    store, emulator, gateway, settings
) -> None:
    """Nothing waits forever: a start call answered without a request id leaves the run suspended on a
    wait nothing can match; the hard deadline ends it."""
    patient_id = await emulator.patient("chris")
    wait = waiting(store, gateway, patient_id, Stage.documents, hard=60)
    report = await reconcile(store, emulator, gateway, settings, ahead=61)
    assert (report.timed_out, report.delivered) == (1, 1)
    assert store.get_wait(wait.id).result_model().outcome == Outcome.timeout
