"""Tolerant response and request models for the Medical API (docs/metriport.md §2).

Responses keep unknown fields and make almost everything optional: Metriport returns stored state
as-is (internal fields, `null` lists). Demographic fields are excluded from `repr` so a logged model
does not leak PHI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator

from metriport_flows.client.messages import CodeableConcept, WireModel

PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"


# The types the consolidated query accepts in `resources` (anything else is a 400): Metriport's
# `resourceTypeForConsolidation` (docs/metriport.md): `resourcesSearchableByPatient`, then
# `resourcesSearchableBySubject`, then `generalResources`.
# Medication and Organization are not in it: they only come along as referenced resources.
RESOURCE_TYPES: tuple[str, ...] = (
    "Account",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "BodyStructure",
    "CarePlan",
    "CareTeam",
    "ChargeItem",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "Communication",
    "CommunicationRequest",
    "Composition",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "Encounter",
    "EnrollmentRequest",
    "EpisodeOfCare",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GuidanceResponse",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "Invoice",
    "List",
    "MeasureReport",
    "Media",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "MolecularSequence",
    "NutritionOrder",
    "Observation",
    "Person",
    "Procedure",
    "Provenance",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchSubject",
    "RiskAssessment",
    "ServiceRequest",
    "Specimen",
    "AdverseEvent",
    "Task",
    "Practitioner",
)


class Address(WireModel):
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = "USA"


class FacilityCreate(WireModel):
    name: str
    npi: str
    tin: str | None = None
    active: bool | None = None
    address: Address


class Facility(WireModel):
    id: str
    e_tag: str | None = None
    oid: str | None = None
    name: str | None = None
    npi: str | None = None
    tin: str | None = None
    active: bool | None = None
    address: Address | None = None


class PersonalIdentifier(WireModel):
    type: str
    value: str
    state: str | None = None


class Contact(WireModel):
    phone: str | None = None
    email: str | None = None


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class Demographics(WireModel):
    """Body of POST /patient, PUT /patient/{id} and POST /patient/match."""

    first_name: str = Field(repr=False)
    last_name: str = Field(repr=False)
    dob: str = Field(repr=False, description="YYYY-MM-DD")
    gender_at_birth: str = Field(repr=False, description="M, F, O or U")
    address: list[Address] = Field(repr=False)
    personal_identifiers: list[PersonalIdentifier] | None = Field(None, repr=False)
    contact: list[Contact] | None = Field(None, repr=False)
    external_id: str | None = None

    @field_validator("address", "contact", mode="before")
    @classmethod
    def _single_object_as_list(cls, value: Any) -> Any:
        return _as_list(value)


class Patient(WireModel):
    id: str
    e_tag: str | None = None
    facility_ids: list[str] = Field(default_factory=list)
    external_id: str | None = None
    additional_ids: dict[str, Any] | None = None
    date_created: str | None = None
    first_name: str | None = Field(None, repr=False)
    last_name: str | None = Field(None, repr=False)
    dob: str | None = Field(None, repr=False)
    gender_at_birth: str | None = Field(None, repr=False)
    personal_identifiers: list[PersonalIdentifier] | None = Field(None, repr=False)
    address: list[Address] | None = Field(None, repr=False)
    contact: list[Contact] | None = Field(None, repr=False)

    @field_validator("address", "contact", mode="before")
    @classmethod
    def _single_object_as_list(cls, value: Any) -> Any:
        return _as_list(value)


class PageMeta(WireModel):
    items_on_page: int | None = None
    items_in_total: int | None = None
    next_page: str | None = None
    prev_page: str | None = None


class PatientPage(WireModel):
    meta: PageMeta = Field(default_factory=PageMeta)
    patients: list[Patient] = Field(default_factory=list)


class Progress(WireModel):
    status: str | None = None
    total: int | None = None
    successful: int | None = None
    errors: int | None = None
    webhook_sent: bool | None = None


class DocumentQueryProgress(WireModel):
    """POST and GET /document/query. GET returns `{}` when the patient never ran a query."""

    request_id: str | None = None
    download: Progress | None = None
    convert: Progress | None = None
    started_at: str | None = None
    trigger_consolidated: bool | None = None

    @property
    def is_processing(self) -> bool:
        """Metriport counts a query as processing while download or convert is processing."""
        return any(p is not None and p.status == PROCESSING for p in (self.download, self.convert))


class FhirDocumentReference(WireModel):
    """A FHIR DocumentReference from GET /document; `file_name` is what GET /document/download-url takes."""

    resource_type: str | None = "DocumentReference"
    id: str | None = None
    status: str | None = None
    description: str | None = None
    type: CodeableConcept | None = None
    content: list[dict[str, Any]] = Field(default_factory=list)

    def _attachment(self) -> dict[str, Any]:
        for item in self.content:
            attachment = item.get("attachment") if isinstance(item, dict) else None
            if isinstance(attachment, dict) and attachment.get("title"):
                return attachment
        return {}

    @property
    def file_name(self) -> str | None:
        return self._attachment().get("title")

    @property
    def content_type(self) -> str | None:
        return self._attachment().get("contentType")

    @property
    def size(self) -> int | None:
        size = self._attachment().get("size")
        return int(size) if isinstance(size, int | str) and str(size).isdigit() else None


class DocumentList(WireModel):
    documents: list[FhirDocumentReference] = Field(default_factory=list)


class DownloadUrl(WireModel):
    url: str


class BulkUrlStatus(WireModel):
    status: str | None = None
    request_id: str | None = None


class ConsolidatedQuery(WireModel):
    request_id: str
    status: str | None = None
    started_at: str | None = None
    resources: list[str] | None = None
    date_from: str | None = None
    date_to: str | None = None
    conversion_type: str | None = None


class ConsolidatedQueries(WireModel):
    """GET /patient/{id}/consolidated/query: `queries` is null when the patient never ran one."""

    status: str | None = None
    queries: list[ConsolidatedQuery] | None = None
    message: str | None = None


class ConsolidatedWebhookStatus(WireModel):
    request_id: str | None = None
    status: str | None = None
    file_url: str | None = None
    gzip_url: str | None = None
    conversion_type: str | None = None
    message: str | None = None


class BulkCreateJob(WireModel):
    request_id: str
    facility_id: str | None = None
    status: str | None = None
    upload_url: str | None = None
    params: dict[str, Any] | None = None
    created_at: str | None = None


class WebhookSettings(WireModel):
    id: str | None = None
    webhook_url: str | None = None
    webhook_key: SecretStr | None = None
    mr_filters: Any = None


class WebhookStatus(WireModel):
    webhook_enabled: bool | None = None
    webhook_status_detail: str | None = None
    webhook_requests_processing: int | None = None
    webhook_requests_failed: int | None = None


class Downloaded(BaseModel):
    """A file streamed from a presigned URL to disk (mode 0600)."""

    path: Path
    sha256: str
    size: int
    content_type: str | None = None
