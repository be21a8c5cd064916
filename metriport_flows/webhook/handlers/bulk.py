"""Handlers for the two bulk messages: their URLs expire, so the files are fetched here, at once.

`medical.document-bulk-download-urls` lists every document of a patient with a URL valid 10 minutes:
download them all (streaming, a few at a time, size and sha256 checked, each retried on network errors),
write a manifest, resolve the `bulk_download` wait with a pointer to it. Documents still unavailable
fail the message (recorded in the manifest), so the inbox retries it; the retry fetches only those.
`medical.bulk-patient-create` comes first as `processing` (noted on the wait) and then as `completed` with a result CSV URL valid 3 minutes: store the CSV
(0600), count succeeded and failed rows, resolve the `bulk_create` wait. A `failed` job ends the wait
as failed; a job that never completes is ended by the reconciler's hard deadline.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from metriport_flows.client.errors import MetriportError, UrlExpired
from metriport_flows.client.messages import (
    BULK_DOWNLOAD_URLS,
    BULK_PATIENT_CREATE,
    COMPLETED,
    BulkDownloadUrlsMessage,
    BulkPatientCreateMessage,
)
from metriport_flows.domain.bulk_csv import parse_result_csv
from metriport_flows.domain.bulk_documents import (
    DocumentSource,
    Manifest,
    Retries,
    documents_dir,
    download_documents,
    extension_for,
    write_manifest,
)
from metriport_flows.domain.file_names import file_name, inside, private_folder
from metriport_flows.domain.stages import (
    BulkCreateDone,
    BulkDownloadReady,
    Outcome,
    ResolvedBy,
    Stage,
)
from metriport_flows.webhook.router import HandlerContext, Router

router = Router()

DOWNLOAD_CONCURRENCY = 4


class DocumentsUnavailable(Exception):
    """Some documents could not be fetched (network) even after their retries: try the message later."""


@router.register(BULK_DOWNLOAD_URLS, stage=Stage.bulk_download)
async def bulk_download_urls(message: BulkDownloadUrlsMessage, ctx: HandlerContext) -> BulkDownloadReady:
    """Fetch every listed document now, while its URL is valid; resolve with the manifest's path."""
    request_id = message.request_id or (ctx.wait.request_id if ctx.wait else None)
    ready = partial(
        BulkDownloadReady, request_id=request_id, message_id=message.message_id, resolved_by=ResolvedBy.webhook
    )
    patient = message.patient
    if patient is None or message.status != COMPLETED:
        return ready(outcome=Outcome.failed, detail=f"bulk download {message.status or 'empty'}")
    sources = [
        DocumentSource(
            id=doc.id or f"document-{n}",
            url=doc.url,
            mime_type=doc.mime_type,
            size=doc.size,
            extension=extension_for(doc.file_name, doc.mime_type),
        )
        for n, doc in enumerate(patient.documents or [], 1)
    ]
    folder = documents_dir(ctx.settings.bundle_dir, patient.patient_id or "unknown", request_id or message.message_id)
    manifest = Manifest(patient_id=patient.patient_id or "", request_id=request_id, message_id=message.message_id)
    retries = Retries(
        attempts=ctx.settings.document_download_attempts, backoff_seconds=ctx.settings.document_retry_backoff_seconds
    )
    manifest.documents = await download_documents(ctx.api, sources, folder, DOWNLOAD_CONCURRENCY, retries)
    path = write_manifest(manifest, folder)
    if manifest.unavailable:  # the inbox retries the message with backoff; the retry fetches only these
        raise DocumentsUnavailable(f"{manifest.unavailable} of {len(sources)} document(s) unavailable for now")
    outcome = Outcome.expired if manifest.expired else Outcome.ready
    detail = f"{manifest.failed} of {len(sources)} document(s) not stored intact" if manifest.failed else None
    return ready(
        outcome=outcome,
        manifest_path=str(path),
        documents=manifest.downloaded,
        total_bytes=manifest.total_bytes,
        failed=manifest.failed,
        detail=detail,
    )


def result_csv_path(bundle_dir: Path, job_id: str) -> Path:
    """`{bundle_dir}/bulk-create/{job_id}.csv`; the folder is 0700 (the CSV holds demographics)."""
    folder = private_folder(inside(bundle_dir, "bulk-create"))
    return inside(folder, file_name(job_id, ".csv"))


@router.register(BULK_PATIENT_CREATE, stage=Stage.bulk_create)
async def bulk_patient_create(message: BulkPatientCreateMessage, ctx: HandlerContext) -> BulkCreateDone | None:
    """`processing` is noted; `completed` stores the result CSV (3-minute URL) and resolves; `failed` too."""
    job = message.bulk_patient_create
    job_id = message.job_id or (ctx.wait.request_id if ctx.wait else None) or message.message_id
    done = partial(BulkCreateDone, request_id=job_id, message_id=message.message_id, resolved_by=ResolvedBy.webhook)
    status = (job.status or "").lower()
    if status not in (COMPLETED, "failed", "expired"):
        ctx.note_progress({"status": status or "unknown", "message_id": message.message_id})
        return None
    if status != COMPLETED:
        reason = f": {job.reason[:200]}" if job.reason else ""
        return done(outcome=Outcome.failed, detail=f"bulk import {status}{reason}")
    if not job.result:
        return done(outcome=Outcome.failed, detail="completed without a result URL")
    try:
        downloaded = await ctx.api.download(job.result, result_csv_path(ctx.settings.bundle_dir, job_id))
    except UrlExpired:
        return done(outcome=Outcome.expired, detail="result CSV URL expired before download")
    except MetriportError as exc:
        return done(outcome=Outcome.failed, detail=f"result CSV download failed ({exc.status})")
    try:
        rows = parse_result_csv(downloaded.path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        return done(
            outcome=Outcome.failed,
            result_path=str(downloaded.path),
            detail=f"result CSV unreadable ({type(exc).__name__})",
        )
    succeeded = sum(1 for row in rows if row.status == "succeeded")
    return done(
        outcome=Outcome.ready,
        result_path=str(downloaded.path),
        succeeded=succeeded,
        failed=len(rows) - succeeded,
    )
