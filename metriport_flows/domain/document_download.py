"""The bulk-document-download process's parameters and its result: ids, paths and counts only."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from metriport_flows.domain.ids import ID_PATTERN
from metriport_flows.domain.waits import WaitTuning


class BulkDocumentDownloadParams(WaitTuning):
    """The UI's form. Ids only: a document's file name may hold the patient's name."""

    patient_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN, description="Metriport patient id")
    document_id: str | None = Field(
        None, max_length=200, pattern=ID_PATTERN, description="Only this document (GET /document/download-url)"
    )
    conversion_type: Literal["html", "pdf"] | None = Field(
        None, description="Single mode, C-CDA XML documents only: fetch it rendered as html or pdf"
    )


class DownloadSummary(BaseModel):
    patient_id: str
    request_id: str | None = None
    manifest_path: str
    documents: int
    downloaded: int
    total_bytes: int
