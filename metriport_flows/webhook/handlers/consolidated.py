"""Consolidated data stage: fetch the bundle the moment its message arrives.

The attachment URL lives 3 minutes (DESIGN fact 6) and a suspended run may wait longer than that for a
worker, so the dispatcher streams the file to `{bundle_dir}/{patient_id}/{request_id}.{ext}` (0600) and
the run gets a pointer with its sha256 and size. An expired URL resolves the wait as `expired`; the flow
re-requests the query under a new attempt.
"""

from __future__ import annotations

from pathlib import Path

from metriport_flows.client.errors import UrlExpired
from metriport_flows.client.messages import (
    CONSOLIDATED_DATA,
    FAILED,
    ConsolidatedDataMessage,
)
from metriport_flows.domain.file_names import UnsafeName, file_name, inside, private_folder
from metriport_flows.domain.stages import ConsolidatedReady, Outcome, Stage
from metriport_flows.webhook.router import HandlerContext, Router

router = Router()


def bundle_path(bundle_dir: Path, patient_id: str | None, request_id: str | None, ext: str) -> Path:
    """`{bundle_dir}/{patient_id}/{request_id}.{ext}`, ids mapped by `file_name`; the folder is made 0700."""
    if not patient_id or not request_id:
        raise UnsafeName("a bundle needs a patient id and a request id")
    folder = private_folder(inside(bundle_dir, file_name(patient_id)))
    return inside(folder, file_name(request_id, f".{ext}"))


def pick_attachment(message: ConsolidatedDataMessage) -> tuple[str, str, str] | None:
    """(url, extension, content type): the JSON bundle first, else the rendered PDF or HTML, else gzip."""
    for url, ext, content_type in (
        (message.json_url, "json", "application/json"),
        (message.pdf_url, "pdf", "application/pdf"),
        (message.html_url, "html", "text/html"),
        (message.gzip_url, "json.gz", "application/gzip"),
    ):
        if url:
            return url, ext, content_type
    return None


@router.register(CONSOLIDATED_DATA, stage=Stage.consolidated)
async def on_consolidated_data(message: ConsolidatedDataMessage, ctx: HandlerContext) -> ConsolidatedReady:
    request_id = message.request_id or (ctx.wait.request_id if ctx.wait is not None else None)
    if message.status == FAILED:
        return ConsolidatedReady(outcome=Outcome.failed, request_id=request_id, detail="consolidated query failed")
    attachment = pick_attachment(message)
    if message.is_empty or attachment is None:
        return ConsolidatedReady(outcome=Outcome.ready, request_id=request_id, empty=True)
    url, ext, content_type = attachment
    dest = bundle_path(ctx.settings.bundle_dir, message.patient_id, request_id or message.message_id, ext)
    try:
        downloaded = await ctx.api.download(url, dest)
    except UrlExpired:
        return ConsolidatedReady(
            outcome=Outcome.expired, request_id=request_id, detail="bundle URL expired before it was downloaded"
        )
    return ConsolidatedReady(
        outcome=Outcome.ready,
        request_id=request_id,
        bundle_path=str(downloaded.path),
        sha256=downloaded.sha256,
        size_bytes=downloaded.size,
        content_type=downloaded.content_type or content_type,
    )
