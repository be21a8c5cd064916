"""F1's dispatcher handlers against the emulator over loopback: bulk download URLs, bulk patient create,
admit/discharge notifications. Messages are the emulator's real signed webhooks, caught by a recording
receiver; handlers run with a real store and a real client."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from metriport_flows.client.api import MedicalApi
from metriport_flows.client.messages import WebhookMessage, parse_message
from metriport_flows.domain.bulk_documents import read_manifest
from metriport_flows.domain.stages import Outcome, Stage
from metriport_flows.settings import Settings
from metriport_flows.store import Store
from metriport_flows.webhook.handlers.bulk import (
    bulk_download_urls,
    bulk_patient_create,
)
from metriport_flows.webhook.handlers.notifications import (
    notification_path,
    patient_notification,
)
from metriport_flows.webhook.router import HandlerContext
from tests.fixtures.sandbox import ADDRESS, FACILITY, JANE

CSV = (
    "externalId,firstName,lastName,dob,gender,addressLine1,city,state,zip\n"
    "e-1,Ann,Lee,1980-04-02,F,1 Main St,Boston,MA,02110\n"
    "e-2,Bo,Park,1975-11-30,M,2 Side St,Boston,MA,02111\n"
)


@pytest.fixture
async def api(emulator, webhook_receiver):
    async with MedicalApi(emulator.base_url, emulator.api_key) as client:
        await client.update_settings(webhook_receiver.url)
        yield client


@pytest.fixture
def ctx(api, sqlite_store: Store, tmp_path: Path):
    def make(wait=None) -> HandlerContext:
        settings = Settings(bundle_dir=tmp_path / "bundles", database_url=sqlite_store.url)
        return HandlerContext(store=sqlite_store, settings=settings, api=api, gateway=None, row=None, wait=wait)

    return make


def messages(emulator, receiver, message_type: str) -> list[WebhookMessage]:
    emulator.idle()
    found = [parse_message(r.body) for r in receiver.received]
    return [m for m in found if m.type == message_type]


async def jane_with_documents(api: MedicalApi, emulator) -> str:
    facility = await api.create_facility(FACILITY)
    patient = await api.create_patient(facility.id, JANE)
    await api.start_document_query(patient.id)
    emulator.idle()
    return patient.id


def open_wait(store: Store, stage: Stage, patient_id: str | None):
    now = datetime.now(UTC)
    return store.register_wait(
        flow_run_id=str(uuid4()),
        stage=stage,
        attempt=1,
        patient_id=patient_id,
        soft_deadline=now + timedelta(minutes=5),
        hard_deadline=now + timedelta(hours=1),
    )


async def bulk_urls_message(api, emulator, receiver) -> WebhookMessage:
    patient_id = await jane_with_documents(api, emulator)
    await api.start_bulk_download(patient_id, metadata={"flowRunId": "r-1", "stage": "bulk_download"})
    (message,) = messages(emulator, receiver, "medical.document-bulk-download-urls")
    return message


async def test_every_document_is_stored_intact_with_a_name_free_manifest(api, ctx, emulator, webhook_receiver):
    message = await bulk_urls_message(api, emulator, webhook_receiver)
    result = await bulk_download_urls(message, ctx())
    assert result.outcome == Outcome.ready and result.failed == 0 and result.documents == 7
    manifest = read_manifest(result.manifest_path)
    announced = {d.id: d for d in message.patient.documents}
    assert {d.id for d in manifest.documents} == set(announced)
    for entry in manifest.documents:
        data = Path(entry.path).read_bytes()
        assert entry.status == "ok" and entry.size == len(data) == announced[entry.id].size
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert stat.S_IMODE(Path(entry.path).stat().st_mode) == 0o600
        assert entry.mime_type == announced[entry.id].mime_type
    assert result.total_bytes == sum(d.size for d in message.patient.documents)
    text = Path(result.manifest_path).read_text()
    assert "JaneSmith" not in text and "Jane" not in text
    assert stat.S_IMODE(Path(result.manifest_path).stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(result.manifest_path).parent.stat().st_mode) == 0o700


async def test_a_refused_url_and_a_size_that_differs_are_reported_per_document(api, ctx, emulator, webhook_receiver):
    message = await bulk_urls_message(api, emulator, webhook_receiver)
    first, second = message.patient.documents[:2]
    first.url = first.url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    second.size = (second.size or 0) + 1
    result = await bulk_download_urls(message, ctx())
    statuses = {d.id: d.status for d in read_manifest(result.manifest_path).documents}
    assert statuses[first.id] == "expired" and statuses[second.id] == "size-mismatch"
    assert result.outcome == Outcome.expired and result.failed == 2 and result.documents == 6


async def test_a_failed_bulk_download_message_fails_the_wait(api, ctx, emulator, webhook_receiver):
    message = await bulk_urls_message(api, emulator, webhook_receiver)
    message.patient.status = "failed"
    result = await bulk_download_urls(message, ctx())
    assert result.outcome == Outcome.failed and result.manifest_path is None


async def bulk_import(api: MedicalApi, csv: str) -> str:
    facility = await api.create_facility({**FACILITY, "address": ADDRESS})
    job = await api.start_bulk_patient_create(facility_id=facility.id)
    await api.upload_bulk_csv(job.upload_url, csv.encode())
    return job.request_id


async def test_processing_is_noted_and_completed_stores_the_result_csv(
    api, ctx, emulator, webhook_receiver, sqlite_store
):
    job_id = await bulk_import(api, CSV)
    processing, completed = messages(emulator, webhook_receiver, "medical.bulk-patient-create")
    wait = open_wait(sqlite_store, Stage.bulk_create, None)
    assert await bulk_patient_create(processing, ctx(wait)) is None
    assert sqlite_store.get_wait(wait.id).progress["status"] == "processing"
    result = await bulk_patient_create(completed, ctx(wait))
    assert (result.outcome, result.request_id, result.succeeded, result.failed) == (Outcome.ready, job_id, 2, 0)
    assert stat.S_IMODE(Path(result.result_path).stat().st_mode) == 0o600
    assert "metriportId" in Path(result.result_path).read_text().splitlines()[0]


async def test_a_failed_import_and_an_expired_result_url_end_the_wait(api, ctx, emulator, webhook_receiver):
    await bulk_import(api, CSV)
    _, completed = messages(emulator, webhook_receiver, "medical.bulk-patient-create")
    failed = completed.model_copy(deep=True)
    failed.bulk_patient_create.status, failed.bulk_patient_create.result = "failed", None
    assert (await bulk_patient_create(failed, ctx())).outcome == Outcome.failed
    completed.bulk_patient_create.result += "0"
    expired = await bulk_patient_create(completed, ctx())
    assert expired.outcome == Outcome.expired and expired.result_path is None


async def test_an_admission_stores_its_bundle_and_returns_nothing(api, ctx, emulator, webhook_receiver, tmp_path):
    facility = await api.create_facility(FACILITY)
    patient = await api.create_patient(facility.id, JANE)
    emulator.control.post("/_sandbox/notifications", json={"patientId": patient.id, "type": "patient.admit"})
    (message,) = messages(emulator, webhook_receiver, "patient.admit")
    assert await patient_notification(message, ctx()) is None
    stored = notification_path(tmp_path / "bundles", patient.id, message.message_id)
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    bundle = json.loads(stored.read_text())
    assert any(e["resource"]["resourceType"] == "Encounter" for e in bundle["entry"])


async def test_a_notification_whose_url_is_refused_is_logged_not_raised(api, ctx, emulator, webhook_receiver, tmp_path):
    facility = await api.create_facility(FACILITY)
    patient = await api.create_patient(facility.id, JANE)
    emulator.control.post("/_sandbox/notifications", json={"patientId": patient.id, "type": "patient.discharge"})
    (message,) = messages(emulator, webhook_receiver, "patient.discharge")
    message.payload.url += "0"
    assert await patient_notification(message, ctx()) is None
    assert not notification_path(tmp_path / "bundles", patient.id, message.message_id).exists()
