"""Prefect tasks for the bulk flows: thin wrappers over the typed client.

A run that suspends re-runs its flow from the top when resumed, so every call before the wait is a task
with a persisted result and a cache key made of the flow run id, the stage and the attempt: a re-run
reads the cached answer instead of starting a second import or uploading twice. `POST /patient/bulk`
and the single-use upload are never retried (each call creates a new job); the bulk download start is
(Metriport answers a duplicate with the running requestId), and so is a single document download
(each try asks for a fresh URL).

Requires: METRIPORT_BASE_URL, METRIPORT_API_KEY, BUNDLE_DIR; a Prefect API for result storage.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import acreate_markdown_artifact
from pydantic import BaseModel

from metriport_flows.client.api import MedicalApi
from metriport_flows.client.errors import UrlExpired
from metriport_flows.client.metadata import validate_metadata
from metriport_flows.domain.bulk_csv import InvalidCsv, problems_markdown, require_valid_csv
from metriport_flows.domain.bulk_documents import (
    DocumentSource,
    Manifest,
    documents_dir,
    download_documents,
    extension_for,
    write_manifest,
)
from metriport_flows.domain.stages import Stage
from metriport_flows.settings import get_settings
from tasks.once import failed_transiently, keep_request_id, once_per_stage_attempt, stored_request_id

# Bump to make every run call Metriport again instead of reading an old cached answer.


class BulkStartFailed(RuntimeError):
    """Metriport refused to start the bulk operation; the message says why (ids only)."""


class BulkJob(BaseModel):
    request_id: str
    upload_url: str


@task(name="check-bulk-csv", persist_result=True, cache_key_fn=once_per_stage_attempt)
async def check_bulk_csv(flow_run_id: str, csv_path: str, stage: Stage, attempt: int) -> int:
    """Metriport's rules, before anything is uploaded; the row count, or InvalidCsv (and an artifact)."""
    try:
        return require_valid_csv(Path(csv_path).read_bytes()).rows
    except InvalidCsv as refused:
        await acreate_markdown_artifact(
            key="bulk-csv-problems",
            markdown=problems_markdown(refused.check),
            description="CSV problems: lines and columns only",
        )
        raise


@task(name="start-bulk-patient-create", persist_result=True, cache_key_fn=once_per_stage_attempt)
async def start_bulk_patient_create(
    flow_run_id: str, facility_id: str | None, dry_run: bool, stage: Stage, attempt: int
) -> BulkJob:
    """POST /patient/bulk: a new import job and its upload URL (never retried: each call is a new job)."""
    async with MedicalApi.from_settings(get_settings()) as api:
        job = await api.start_bulk_patient_create(facility_id=facility_id, dry_run=dry_run)
    if not job.upload_url:
        raise BulkStartFailed(f"bulk import {job.request_id} came without an upload URL ({job.status})")
    return BulkJob(request_id=job.request_id, upload_url=job.upload_url)


@task(name="upload-bulk-csv", persist_result=True, cache_key_fn=once_per_stage_attempt)
async def upload_bulk_csv(flow_run_id: str, job: BulkJob, csv_path: str, stage: Stage, attempt: int) -> int:
    """PUT the CSV to the job's single-use URL (valid 10 minutes); the number of bytes sent."""
    data = Path(csv_path).read_bytes()
    async with MedicalApi.from_settings(get_settings()) as api:
        await api.upload_bulk_csv(job.upload_url, data)
    return len(data)


@task(
    name="start-bulk-download",
    persist_result=True,
    cache_key_fn=once_per_stage_attempt,
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=failed_transiently,
)
async def start_bulk_download(flow_run_id: str, patient_id: str, stage: Stage, attempt: int) -> str:
    """POST /document/download-url/bulk with the run's correlation metadata; the requestId."""
    if stored := await stored_request_id(flow_run_id, stage, attempt):
        return stored
    metadata = validate_metadata({"flowRunId": flow_run_id, "stage": Stage(stage).value})
    async with MedicalApi.from_settings(get_settings()) as api:
        started = await api.start_bulk_download(patient_id, metadata=metadata)
    if started.status == "failed" or not started.request_id:
        raise BulkStartFailed(f"bulk download for patient {patient_id} not started ({started.status})")
    await keep_request_id(flow_run_id, stage, attempt, started.request_id)
    return started.request_id


class DocumentNotFound(LookupError):
    """The patient has no document with that id (GET /document)."""


@task(name="download-document", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=failed_transiently)
async def download_document(flow_run_id: str, patient_id: str, document_id: str, conversion_type: str | None) -> str:
    """Find the document's file name (GET /document: it may hold the patient's name, so it is never a
    parameter), GET /document/download-url, fetch it at once (the URL lives ~3 minutes); the manifest path."""
    settings = get_settings()
    folder = documents_dir(settings.bundle_dir, patient_id, f"single-{flow_run_id}")
    async with MedicalApi.from_settings(settings) as api:
        found = [
            (d, file_name)
            for d in await api.list_documents(patient_id)
            if d.id == document_id and (file_name := d.file_name)
        ]
        if not found:
            raise DocumentNotFound(f"patient {patient_id} has no document {document_id}")
        document, file_name = found[0]
        extension = f".{conversion_type}" if conversion_type else extension_for(file_name, None)
        url = await api.get_download_url(file_name, conversion_type=conversion_type)
        source = DocumentSource(
            id=document_id, url=url, extension=extension, mime_type=None if conversion_type else document.content_type
        )
        manifest = Manifest(patient_id=patient_id)
        manifest.documents = await download_documents(api, [source], folder, concurrency=1)
    if manifest.documents[0].status == "expired":
        raise UrlExpired("AccessDenied", f"download URL of document {document_id} expired")
    return str(write_manifest(manifest, folder))
