"""bulk-document-download: every document of one patient (or one document), stored locally with a manifest.

Bulk mode: `POST /document/download-url/bulk` → wait for `medical.document-bulk-download-urls`. The
URLs in that message live 10 minutes, longer than a suspended run may take to come back, so the
dispatcher downloads the documents as soon as the message arrives (webhook/handlers/bulk.py) and
resolves the wait with a manifest path; the run resumes, reads the manifest and publishes an artifact.
If the URLs had expired before the dispatcher got to them, the download is requested once more.
Single mode (`document_id` given): find the document, `GET /document/download-url`, fetch it now.
The manifest lists ids, paths, sizes, sha256 and mime types; never file names or contents.
The run fails when Metriport reports a failure, the hard deadline passes, or a document is not intact.

Requires: a deployment (the wait suspends), PREFECT_API_URL, METRIPORT_BASE_URL, METRIPORT_API_KEY,
DATABASE_URL, BUNDLE_DIR, a running receiver + dispatcher.
"""

from __future__ import annotations

from typing import cast

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.runtime import flow_run

from metriport_flows.domain.bulk_documents import (
    Manifest,
    manifest_markdown,
    read_manifest,
)
from metriport_flows.domain.document_download import BulkDocumentDownloadParams, DownloadSummary
from metriport_flows.domain.stages import BulkDownloadReady, Outcome, Stage
from metriport_flows.settings import get_settings
from metriport_flows.store.store import get_store
from tasks.bulk import download_document, start_bulk_download
from tasks.waits import StageWait

MAX_ATTEMPTS = 2


class DocumentDownloadFailed(RuntimeError):
    """Metriport failed, the deadline passed, or documents were not stored intact (ids only)."""


async def _bulk(params: BulkDocumentDownloadParams, run_id: str) -> BulkDownloadReady:
    store = get_store()
    deadlines = params.deadlines(get_settings())
    for attempt in range(1, MAX_ATTEMPTS + 1):
        wait = StageWait(store, run_id, params.patient_id, Stage.bulk_download, attempt, deadlines)
        wait.register()
        wait.set_request_id(await start_bulk_download(run_id, params.patient_id, Stage.bulk_download, attempt))
        result = cast(BulkDownloadReady, await wait.result())
        if result.outcome != Outcome.expired:
            break
        get_run_logger().warning("bulk download %s: URLs expired; asking again", result.request_id)
    if result.outcome not in (Outcome.ready, Outcome.expired) or not result.manifest_path:
        raise DocumentDownloadFailed(
            f"bulk download for patient {params.patient_id} ended {result.outcome.value}: {result.detail or ''}"
        )
    return result


@flow(name="bulk-document-download", persist_result=True)
async def bulk_document_download(params: BulkDocumentDownloadParams) -> DownloadSummary:
    """All of a patient's documents through the bulk URLs, or one through GET /document/download-url."""
    run_id = str(flow_run.get_id())
    request_id = None
    if params.document_id:
        manifest_path = await download_document(run_id, params.patient_id, params.document_id, params.conversion_type)
    else:
        result = await _bulk(params, run_id)
        manifest_path, request_id = cast(str, result.manifest_path), result.request_id
    manifest: Manifest = read_manifest(manifest_path)
    await acreate_markdown_artifact(
        key="document-download", markdown=manifest_markdown(manifest), description="Documents: ids and sizes"
    )
    if manifest.failed:
        raise DocumentDownloadFailed(
            f"{manifest.failed} of {len(manifest.documents)} document(s) not stored intact; see {manifest_path}"
        )
    return DownloadSummary(
        patient_id=params.patient_id,
        request_id=request_id,
        manifest_path=manifest_path,
        documents=len(manifest.documents),
        downloaded=manifest.downloaded,
        total_bytes=manifest.total_bytes,
    )
