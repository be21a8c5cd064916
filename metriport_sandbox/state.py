"""In-memory records of one emulator tenant (a Metriport customer, cxId), and the async jobs' states."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def now_iso() -> str:
    """ISO-8601 UTC with milliseconds, as JavaScript's `toISOString()`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Facility:
    id: str
    oid: str
    name: str
    npi: str
    tin: str | None
    active: bool | None
    address: dict
    version: int = 0

    @property
    def etag(self) -> str:
        return str(self.version)


@dataclass
class Document:
    id: str
    patient_id: str
    request_id: str
    file_name: str
    seed_file: str
    seed_key: str
    description: str
    type: dict
    status: str
    indexed: str
    mime_type: str
    size: int
    organization: str


@dataclass
class DocumentQuery:
    """A document query; `state` is queued -> downloading -> converting -> completed | failed | stuck."""

    request_id: str
    started_at: str
    progress: dict
    state: str = "queued"
    documents: list[Document] = field(default_factory=list)

    @property
    def processing(self) -> bool:
        return any(self.progress.get(k, {}).get("status") == "processing" for k in ("download", "convert"))


@dataclass
class ConsolidatedQuery:
    request_id: str
    started_at: str
    resources: list[str]
    date_from: str | None
    date_to: str | None
    conversion_type: str
    from_dashboard: bool
    status: str = "processing"

    def dto(self) -> dict:
        body: dict[str, Any] = {
            "requestId": self.request_id,
            "status": self.status,
            "startedAt": self.started_at,
            "resources": list(self.resources),
        }
        if self.date_from:
            body["dateFrom"] = self.date_from
        if self.date_to:
            body["dateTo"] = self.date_to
        body["conversionType"] = self.conversion_type
        return body

    def same_params(
        self, resources: list[str], date_from: str | None, date_to: str | None, conversion_type: str
    ) -> bool:
        return (
            set(self.resources) == set(resources)
            and self.date_from == date_from
            and self.date_to == date_to
            and self.conversion_type == conversion_type
        )


@dataclass
class ConsolidatedResult:
    """What a finished consolidated query produced: kept for the webhook GET and the signed files."""

    request_id: str
    patient_id: str
    status: str
    conversion_type: str
    resources: list[dict] | None
    file_url: str | None = None
    gzip_url: str | None = None


@dataclass
class BulkDownload:
    request_id: str
    status: str = "processing"


@dataclass
class Patient:
    id: str
    ordinal: int
    facility_ids: list[str]
    demographics: dict
    external_id: str | None
    additional_ids: dict | None
    date_created: str
    version: int = 0
    metadata: dict[str, dict | None] = field(default_factory=dict)
    document_query: DocumentQuery | None = None
    documents: list[Document] = field(default_factory=list)
    # Every document a query ever stored, by id: its file stays downloadable (as in Metriport's bucket)
    # after a later query lists others, so a download under way never meets a 404.
    stored_documents: dict[str, Document] = field(default_factory=dict)
    resources: list[dict] | None = None
    record_at: str | None = None
    consolidated: list[ConsolidatedQuery] = field(default_factory=list)
    bulk_download: BulkDownload | None = None
    bundle_size: int | None = None
    dq_count: int = 0
    dq_posts: int = 0  # every accepted POST /document/query, a no-op on a running query included

    @property
    def etag(self) -> str:
        return str(self.version)

    @property
    def first_name(self) -> str:
        return str(self.demographics.get("firstName", ""))

    def list_documents(self, documents: list[Document]) -> None:
        """What a document query found becomes the patient's list; their files are kept with the earlier ones."""
        self.documents = list(documents)
        self.stored_documents.update((doc.id, doc) for doc in documents)


@dataclass
class BulkImport:
    """A bulk patient create job: waiting -> processing -> completed | failed."""

    request_id: str
    facility_id: str
    dry_run: bool
    created_at: str
    status: str = "waiting"
    upload_used: bool = False
    result_csv: bytes | None = None
    pending_patients: set[str] = field(default_factory=set)


@dataclass
class WebhookRequest:
    """One stored webhook message (Metriport's webhook_request row)."""

    message_id: str
    type: str
    request_id: str | None
    when: str
    payload: dict
    patient_id: str | None
    metadata_flow: str | None
    fault_key: str
    seq: int
    status: str = "processing"
    http_status: int | None = None
    duration_ms: int | None = None
    status_detail: str | None = None

    def summary(self) -> dict:
        return {
            "messageId": self.message_id,
            "type": self.type,
            "requestId": self.request_id,
            "patientId": self.patient_id,
            "when": self.when,
            "status": self.status,
            "httpStatus": self.http_status,
            "durationMillis": self.duration_ms,
            "statusDetail": self.status_detail,
        }


@dataclass
class WebhookSettings:
    id: str
    webhook_url: str | None = None
    webhook_key: str | None = None
    mr_filters: Any = None
    webhook_enabled: bool = False
    status_detail: str | None = None


@dataclass
class Tenant:
    id: str
    rng: random.Random
    settings: WebhookSettings
    facilities: dict[str, Facility] = field(default_factory=dict)
    patients: dict[str, Patient] = field(default_factory=dict)
    webhooks: list[WebhookRequest] = field(default_factory=list)
    consolidated_results: dict[str, ConsolidatedResult] = field(default_factory=dict)
    bulk_imports: dict[str, BulkImport] = field(default_factory=dict)
    notification_bundles: dict[str, list[dict]] = field(default_factory=dict)
    patient_seq: int = 0
    facility_seq: int = 0
    message_counts: dict[str, int] = field(default_factory=dict)
