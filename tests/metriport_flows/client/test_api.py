"""Every MedicalApi method against the in-process emulator (ASGITransport), plus its typed errors."""

from __future__ import annotations

import asyncio
import hashlib
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from metriport_flows.client.api import MedicalApi, default_retry
from metriport_flows.client.errors import (
    BadRequest,
    Forbidden,
    InvalidMetadata,
    Locked,
    NotFound,
    PatientLimitReached,
    RateLimited,
    ServerError,
    UrlExpired,
)
from metriport_flows.client.messages import (
    BulkDownloadUrlsMessage,
    BulkPatientCreateMessage,
    ConsolidatedDataMessage,
    DocumentDownloadMessage,
    GenericMessage,
    PatientAdmitMessage,
    PatientDischargeMessage,
    parse_message,
)
from metriport_flows.client.models import Address, Demographics, FacilityCreate
from metriport_flows.settings import Settings
from tests.fixtures.emulator import api_key_for

BASE = "http://emulator.test"
ADDRESS = Address(address_line1="1 Main St", city="Springfield", state="OR", zip="97477")
FACILITY = FacilityCreate(name="Test Clinic", npi="1234567893", address=ADDRESS)
SEED_FILES = ["JaneSmith.xml", "demo2.pdf", "demo3.pdf", "demo4.pdf", "demo5.jpeg", "demo6.tif", "demo7.jpeg"]


def person(first: str = "Zed", last: str = "Nobody", dob: str = "1980-01-01") -> Demographics:
    return Demographics(first_name=first, last_name=last, dob=dob, gender_at_birth="M", address=[ADDRESS])


JANE = Demographics(
    first_name="Jane",
    last_name="Smith",
    dob="1996-02-10",
    gender_at_birth="F",
    address=[Address(address_line1="123 Arsenal St", city="Phoenix", state="AZ", zip="85300")],
)


@pytest.fixture
async def control(emulator_app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator_app), base_url=BASE) as client:
        yield client


@pytest.fixture
async def api(emulator_app) -> AsyncIterator[MedicalApi]:
    key = api_key_for(f"client-{uuid.uuid4().hex[:8]}")
    retry = default_retry(total=3, backoff_factor=0.01, max_backoff_wait=2.0)
    async with MedicalApi(BASE, key, transport=httpx.ASGITransport(app=emulator_app), retry=retry) as client:
        yield client


async def flush(control: httpx.AsyncClient) -> None:
    assert (await control.post("/_sandbox/flush", params={"timeout": 20})).json()["idle"] is True


async def served_sha256(control: httpx.AsyncClient) -> str:
    rows = [d for d in (await control.get("/_sandbox/downloads")).json() if d["status"] == 200]
    return rows[-1]["sha256"]


async def test_facility_crud_and_validation_error(api: MedicalApi) -> None:
    facility = await api.create_facility(FACILITY)
    assert facility.id and facility.npi == "1234567893" and facility.address.city == "Springfield"
    assert [f.id for f in await api.list_facilities()] == [facility.id]
    assert (await api.get_facility(facility.id)).name == "Test Clinic"
    renamed = await api.update_facility(facility.id, FACILITY.model_copy(update={"name": "Renamed"}))
    assert renamed.name == "Renamed"
    await api.delete_facility(facility.id)
    with pytest.raises(NotFound):
        await api.get_facility(facility.id)
    with pytest.raises(BadRequest) as caught:
        await api.create_facility(FACILITY.model_copy(update={"npi": "123"}))
    assert caught.value.status == 400 and "npi" in caught.value.detail


async def test_patient_lifecycle_pages_and_match(api: MedicalApi) -> None:
    facility = await api.create_facility(FACILITY)
    created = [await api.create_patient(facility.id, person(f"Zed{i}")) for i in range(5)]
    again = await api.create_patient(facility.id, person("Zed0"))
    assert again.id == created[0].id  # idempotent on demographics, so safe to retry
    assert (await api.get_patient(created[1].id)).first_name == "Zed1"
    assert len(await api.list_patients(facility.id)) == 5
    # Pages come in id order (uuidv7: creation order, but random within one millisecond).
    assert [p.id async for p in api.iter_patients(facility.id, page_size=2)] == sorted(p.id for p in created)
    page = await api.get_patient_page(facility.id, count=2)
    assert page.meta.items_on_page == 2 and page.meta.items_in_total == 5 and page.meta.next_page
    updated = await api.update_patient(created[1].id, person("Zed1", last="Renamed"), facility.id)
    assert updated.last_name == "Renamed"
    assert (await api.match_patient(person("Zed2"))).id == created[2].id
    assert await api.match_patient(person("Nobody", "Anywhere")) is None
    await api.delete_patient(created[4].id, facility.id)
    with pytest.raises(NotFound) as caught:
        await api.get_patient(created[4].id)
    assert caught.value.status == 404 and caught.value.title


async def test_bad_api_key_is_forbidden(emulator_app) -> None:
    async with MedicalApi(BASE, "not-a-key", transport=httpx.ASGITransport(app=emulator_app)) as api:
        with pytest.raises(Forbidden) as caught:
            await api.list_facilities()
    assert caught.value.status == 403


async def test_sandbox_patient_limit(api: MedicalApi, control: httpx.AsyncClient) -> None:
    await control.post("/_sandbox/config", json={"patient_limit": 1})
    facility = await api.create_facility(FACILITY)
    await api.create_patient(facility.id, person("One"))
    with pytest.raises(PatientLimitReached) as caught:
        await api.create_patient(facility.id, person("Two"))
    assert "Sandbox mode" in caught.value.detail


async def test_document_query_round_trip_with_metadata_and_download(
    api: MedicalApi, control: httpx.AsyncClient, webhook_receiver, tmp_path: Path
) -> None:
    settings = await api.update_settings(webhook_receiver.url)
    assert settings.webhook_url == webhook_receiver.url and settings.webhook_key.get_secret_value()
    assert (await api.get_settings()).webhook_key == settings.webhook_key
    facility = await api.create_facility(FACILITY)
    patient = await api.create_patient(facility.id, JANE)
    assert (await api.get_document_query(patient.id)).request_id is None
    started = await api.start_document_query(patient.id, facility.id, metadata={"flowRunId": "run-9"})
    assert started.is_processing and started.request_id
    await flush(control)
    progress = await api.get_document_query(patient.id)
    assert not progress.is_processing and progress.download.successful == 7
    received = webhook_receiver.wait_for(1, "medical.document-download")[0]
    message = parse_message(received.body)
    assert isinstance(message, DocumentDownloadMessage)
    assert message.request_id == started.request_id and message.flow_run_id == "run-9"
    assert [d.file_name for d in message.patient.documents] == SEED_FILES
    documents = await api.list_documents(patient.id, date_from="2000-01-01")
    assert sorted(d.file_name for d in documents) == sorted(SEED_FILES)
    url = await api.get_download_url("JaneSmith.xml")
    downloaded = await api.download(url, tmp_path / "docs" / "JaneSmith.xml")
    data = downloaded.path.read_bytes()
    assert data.lstrip().startswith(b"<?xml") and downloaded.size == len(data)
    assert downloaded.sha256 == hashlib.sha256(data).hexdigest() == await served_sha256(control)
    assert stat.S_IMODE(downloaded.path.stat().st_mode) == 0o600
    assert list(downloaded.path.parent.iterdir()) == [downloaded.path]
    status = await api.get_webhook_status()
    assert status.webhook_enabled is True and status.webhook_requests_failed == 0
    await api.retry_webhooks()


async def test_expired_url_raises_and_leaves_no_file(api: MedicalApi, control: httpx.AsyncClient, tmp_path) -> None:
    facility = await api.create_facility(FACILITY)
    patient = await api.create_patient(facility.id, JANE)
    await api.start_document_query(patient.id)
    await flush(control)
    await control.post("/_sandbox/faults", json={"url_lifetime": 0})
    url = await api.get_download_url("demo2.pdf")
    with pytest.raises(UrlExpired) as caught:
        await api.download(url, tmp_path / "demo2.pdf")
    assert caught.value.code == "AccessDenied" and caught.value.detail == "Request has expired"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NotFound):
        await api.get_download_url("no-such-file.pdf")


async def test_update_during_document_query_is_locked(api: MedicalApi, control: httpx.AsyncClient) -> None:
    facility = await api.create_facility(FACILITY)
    patient = await api.create_patient(facility.id, JANE)
    await control.post("/_sandbox/faults", json={"stuck_patients": [patient.id]})
    first = await api.start_document_query(patient.id)
    second = await api.start_document_query(patient.id, metadata={"flowRunId": "ignored"})
    assert second.request_id == first.request_id  # single-flight: the reason retrying the POST is safe
    with pytest.raises(Locked) as caught:
        await api.update_patient(patient.id, JANE)
    assert caught.value.status == 423 and caught.value.detail == "Document querying currently in progress"


async def test_invalid_metadata_is_refused_before_sending(api: MedicalApi) -> None:
    facility = await api.create_facility(FACILITY)
    patient = await api.create_patient(facility.id, person())
    with pytest.raises(InvalidMetadata, match="at most 50"):
        await api.start_document_query(patient.id, metadata={f"k{i}": "v" for i in range(51)})
    with pytest.raises(InvalidMetadata, match="not a string"):
        await api.start_consolidated_query(patient.id, "json", metadata={"n": 1})  # type: ignore[dict-item]
    assert (await api.get_document_query(patient.id)).request_id is None
    assert (await api.get_consolidated_queries(patient.id)).queries is None


async def test_consolidated_query_json_round_trip(
    api: MedicalApi, control: httpx.AsyncClient, webhook_receiver, tmp_path: Path
) -> None:
    await api.update_settings(webhook_receiver.url)
    facility = await api.create_facility(FACILITY)
    patient = await api.create_patient(facility.id, JANE)
    await api.start_document_query(patient.id)
    await flush(control)
    query = await api.start_consolidated_query(
        patient.id,
        "json",
        resources=["Condition", "Observation"],
        date_from="2000-01-01",
        metadata={"flowRunId": "run-c", "stage": "consolidated"},
    )
    assert query.status == "processing" and query.conversion_type == "json"
    assert (await api.get_consolidated_query(patient.id, query.request_id)).request_id == query.request_id
    await flush(control)
    queries = await api.get_consolidated_queries(patient.id)
    assert [(q.request_id, q.status) for q in queries.queries] == [(query.request_id, "completed")]
    stored = await api.get_consolidated_webhook(patient.id, query.request_id)
    assert stored.status == "completed" and stored.file_url
    message = parse_message(webhook_receiver.wait_for(1, "medical.consolidated-data")[0].body)
    assert isinstance(message, ConsolidatedDataMessage) and not message.is_empty
    assert message.request_id == query.request_id and message.stage == "consolidated"
    downloaded = await api.download(message.gzip_url, tmp_path / f"{query.request_id}.json.gz")
    assert downloaded.path.read_bytes()[:2] == b"\x1f\x8b"
    assert downloaded.sha256 == await served_sha256(control)
    with pytest.raises(NotFound):
        await api.get_consolidated_query(patient.id, "0195d965-0000-7000-8000-000000000000")
    with pytest.raises(BadRequest) as caught:
        await api.start_consolidated_query(patient.id, "json", date_from="01/02/2020")
    assert caught.value.title == "Missing or invalid parameters"


async def test_bulk_download_urls(api: MedicalApi, control: httpx.AsyncClient, webhook_receiver, tmp_path) -> None:
    await api.update_settings(webhook_receiver.url)
    facility = await api.create_facility(FACILITY)
    patient = await api.create_patient(facility.id, JANE)
    await api.start_document_query(patient.id)
    await flush(control)
    started = await api.start_bulk_download(patient.id, metadata={"stage": "bulk-download"})
    assert started.status == "processing" and started.request_id
    await flush(control)
    message = parse_message(webhook_receiver.wait_for(1, "medical.document-bulk-download-urls")[0].body)
    assert isinstance(message, BulkDownloadUrlsMessage) and message.stage == "bulk-download"
    pdf = next(d for d in message.patient.documents if d.file_name == "demo2.pdf")
    downloaded = await api.download(pdf.url, tmp_path / "demo2.pdf")
    assert downloaded.path.read_bytes().startswith(b"%PDF")


async def test_bulk_patient_create_upload_is_single_use(
    api: MedicalApi, control: httpx.AsyncClient, webhook_receiver
) -> None:
    await api.update_settings(webhook_receiver.url)
    facility = await api.create_facility(FACILITY)
    job = await api.start_bulk_patient_create(facility.id)
    assert job.status == "waiting" and job.upload_url and job.facility_id == facility.id
    csv = (
        b"externalId,firstName,lastName,dob,gender,addressLine1,city,state,zip\n"
        b"e1,Ann,Lee,1970-01-01,F,1 Main St,Springfield,OR,97477\n"
    )
    await api.upload_bulk_csv(job.upload_url, csv)
    await flush(control)
    message = parse_message(webhook_receiver.wait_for(1, "medical.bulk-patient-create")[0].body)
    assert isinstance(message, BulkPatientCreateMessage)
    assert message.job_id == job.request_id and message.status == "processing"
    with pytest.raises((UrlExpired, NotFound, BadRequest)):
        await api.upload_bulk_csv(job.upload_url, csv)


async def test_persistent_5xx_from_the_emulator_is_retried_then_raised(
    api: MedicalApi, control: httpx.AsyncClient
) -> None:
    facility = await api.create_facility(FACILITY)
    await control.post("/_sandbox/faults", json={"api_5xx": 1.0})
    with pytest.raises(ServerError) as caught:
        await api.get_facility(facility.id)
    assert caught.value.status == 500


async def test_rate_limit_429_waits_retry_after_then_succeeds(
    api: MedicalApi, control: httpx.AsyncClient, emulator_app
) -> None:
    await control.post("/_sandbox/config", json={"rate_limits": {"documentQuery": 1}, "rate_limit_window": 1})
    facility = await api.create_facility(FACILITY)
    patients = [await api.create_patient(facility.id, person(f"Rate{i}")) for i in range(2)]
    first = await api.start_document_query(patients[0].id)
    second = await api.start_document_query(patients[1].id)  # 429, Retry-After: 1, then the next window
    assert first.request_id and second.request_id and first.request_id != second.request_id
    third = await api.create_patient(facility.id, person("Rate3"))
    no_retry = default_retry(total=0)
    async with MedicalApi(BASE, api._api_key, transport=httpx.ASGITransport(app=emulator_app), retry=no_retry) as bare:
        with pytest.raises(RateLimited) as caught:
            await bare.start_document_query(third.id)
    assert caught.value.retry_after is not None and "document query" in caught.value.detail


async def test_notifications_parse_and_their_bundle_downloads(
    api: MedicalApi, control: httpx.AsyncClient, webhook_receiver, tmp_path: Path
) -> None:
    await api.update_settings(webhook_receiver.url)
    facility = await api.create_facility(FACILITY)
    patient = await api.create_patient(facility.id, person("Notified"))
    for kind in ("patient.admit", "patient.discharge"):
        sent = await control.post("/_sandbox/notifications", json={"patientId": patient.id, "type": kind})
        assert sent.status_code == 200, sent.text
    await flush(control)
    admit = parse_message(webhook_receiver.wait_for(1, "patient.admit")[0].body)
    discharge = parse_message(webhook_receiver.wait_for(1, "patient.discharge")[0].body)
    assert isinstance(admit, PatientAdmitMessage) and isinstance(discharge, PatientDischargeMessage)
    assert admit.patient_id == discharge.patient_id == patient.id
    assert admit.payload.admit_timestamp and discharge.payload.discharge_timestamp
    bundle = await api.download(discharge.payload.url, tmp_path / "adt.json")
    assert bundle.size > 0 and b"Encounter" in bundle.path.read_bytes()
    typed = [parse_message(r.body) for r in webhook_receiver.messages()]
    assert all(not isinstance(m, GenericMessage) for m in typed)


async def test_from_settings_over_real_loopback(emulator, tmp_path: Path) -> None:
    """The default transport (no injection) against the uvicorn emulator on a free port."""
    settings = Settings(metriport_base_url=emulator.base_url, metriport_api_key=emulator.api_key)
    async with MedicalApi.from_settings(settings) as api:
        facility = await api.create_facility(FACILITY)
        patient = await api.create_patient(facility.id, JANE)
        await api.start_document_query(patient.id)
        await asyncio.to_thread(emulator.idle)
        downloaded = await api.download(await api.get_download_url("demo2.pdf"), tmp_path / "demo2.pdf")
    assert downloaded.path.read_bytes().startswith(b"%PDF") and downloaded.content_type == "application/pdf"
