"""Document query stage: when are a patient's documents ready? (DESIGN fact 5, docs/metriport.md §5.1–5.2)

- the conversion message (completed) ends it; failed download or conversion fails it;
- a download message with no convertible (XML) document ends it when GET /document/query shows nothing
  processing (the sandbox sends no conversion message then: docs/metriport.md §5.1 item 4);
- a download message with convertible documents only records its counts on the wait: the conversion
  message that follows resolves the wait and carries them (or, when it came first, reads them from the
  query's progress).
"""

from __future__ import annotations

import httpx

from metriport_flows.client.errors import MetriportError
from metriport_flows.client.messages import (
    DOCUMENT_CONVERSION,
    DOCUMENT_DOWNLOAD,
    FAILED,
    DocumentConversionMessage,
    DocumentDownloadMessage,
    DocumentRef,
)
from metriport_flows.domain.stages import DocumentsReady, Outcome, Stage
from metriport_flows.webhook.router import HandlerContext, Router

router = Router()

CONVERTIBLE_MIME_TYPES = {"application/xml", "text/xml"}


def is_convertible(document: DocumentRef) -> bool:
    """Metriport converts C-CDA XML to FHIR; everything else (PDF, images) is only downloaded."""
    mime = (document.mime_type or "").split(";")[0].strip().lower()
    if mime:
        return mime in CONVERTIBLE_MIME_TYPES
    return (document.file_name or "").lower().endswith(".xml")


@router.register(DOCUMENT_DOWNLOAD, stage=Stage.documents)
async def on_document_download(message: DocumentDownloadMessage, ctx: HandlerContext) -> DocumentsReady | None:
    if message.status == FAILED:
        return DocumentsReady(outcome=Outcome.failed, detail="document download failed")
    documents = (message.patient.documents if message.patient is not None else None) or []
    convertible = sum(1 for document in documents if is_convertible(document))
    ctx.note_progress({"documents": len(documents), "convertible": convertible})
    if convertible:
        return None
    patient_id = message.patient_id or (ctx.wait.patient_id if ctx.wait else None)
    if patient_id is None:
        return None  # no patient to ask about: the reconciler ends the wait from its deadline
    query = await ctx.api.get_document_query(patient_id)
    if query.is_processing:
        return None
    return DocumentsReady(outcome=Outcome.ready, documents=len(documents), converted=0)


@router.register(DOCUMENT_CONVERSION, stage=Stage.documents)
async def on_document_conversion(message: DocumentConversionMessage, ctx: HandlerContext) -> DocumentsReady:
    progress = (ctx.wait.progress if ctx.wait is not None else None) or {}
    documents, converted = progress.get("documents"), progress.get("convertible")
    if documents is None and message.patient_id:
        documents, converted = await _counts_from_progress(ctx, message.patient_id)
    if message.status == FAILED:
        return DocumentsReady(outcome=Outcome.failed, detail="document conversion failed", documents=documents)
    return DocumentsReady(outcome=Outcome.ready, documents=documents, converted=converted)


async def _counts_from_progress(ctx: HandlerContext, patient_id: str) -> tuple[int | None, int | None]:
    """The conversion message overtook the download message (the sandbox fires both at once): the counts
    are in the query's stored progress. They are nice to have, so a failed look-up leaves them unknown
    rather than holding the run back."""
    try:
        query = await ctx.api.get_document_query(patient_id)
    except (MetriportError, httpx.HTTPError):
        return None, None
    download, convert = query.download, query.convert
    documents = (
        None if download is None else (download.successful if download.successful is not None else download.total)
    )
    return documents, None if convert is None else convert.total
