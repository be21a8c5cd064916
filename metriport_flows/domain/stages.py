"""What a wait waits for, and the typed result that ends it.

One result model per stage: the dispatcher, the reconciler or a person (the UI's Resume form) resolves a
wait with it, the store keeps it as JSON, and the suspended run receives it as its `run_input`. A
distinct model per stage means a stale message cannot resume the wrong stage. Results carry ids,
counts, hashes and paths only, never PHI.
"""

from __future__ import annotations

from enum import StrEnum

from prefect.input import RunInput
from pydantic import Field


class Stage(StrEnum):
    documents = "documents"
    consolidated = "consolidated"
    bulk_download = "bulk_download"
    bulk_create = "bulk_create"


class Outcome(StrEnum):
    ready = "ready"
    failed = "failed"
    timeout = "timeout"
    expired = "expired"


class ResolvedBy(StrEnum):
    webhook = "webhook"
    reconciler = "reconciler"
    manual = "manual"


class StageResult(RunInput):
    outcome: Outcome = Field(description="ready, failed, timeout (deadline passed) or expired (URL expired)")
    request_id: str | None = Field(None, description="Metriport requestId of the query this ends")
    message_id: str | None = Field(None, description="Webhook message that resolved it, if any")
    resolved_by: ResolvedBy = Field(ResolvedBy.manual, description="Who resolved it")
    detail: str | None = Field(None, description="Why, for failures; never PHI")


class DocumentsReady(StageResult):
    documents: int | None = Field(None, description="Documents the download message listed")
    converted: int | None = Field(None, description="Documents sent to conversion (convert.total)")


class ConsolidatedReady(StageResult):
    bundle_path: str | None = Field(None, description="Where the dispatcher stored the bundle")
    sha256: str | None = None
    size_bytes: int | None = None
    content_type: str | None = Field(None, description="application/json, application/pdf or text/html")
    empty: bool = Field(False, description="Metriport sent an empty bundle: no data for this patient")


class BulkDownloadReady(StageResult):
    manifest_path: str | None = Field(None, description="JSON manifest: ids, paths, sizes, mime types")
    documents: int = 0
    total_bytes: int = 0
    failed: int = Field(0, description="Documents not downloaded (URL expired, error) or whose size differed")


class BulkCreateDone(StageResult):
    result_path: str | None = Field(None, description="Where the result CSV was stored")
    succeeded: int = 0
    failed: int = 0


RESULT_MODELS: dict[Stage, type[StageResult]] = {
    Stage.documents: DocumentsReady,
    Stage.consolidated: ConsolidatedReady,
    Stage.bulk_download: BulkDownloadReady,
    Stage.bulk_create: BulkCreateDone,
}


def pause_key(stage: Stage, attempt: int) -> str:
    """A pause key fires once, so every stage attempt gets its own. Prefect derives run-input keys from it,
    which allow only lowercase letters, digits and dashes (`bulk_download` would fail the suspend)."""
    return f"{Stage(stage).value.replace('_', '-')}-{attempt}"
