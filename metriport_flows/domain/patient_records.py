"""The patient-records business rules, free of Prefect so they are tested directly.

What the flow accepts (`PatientRecordsParams`, the UI's form), what it returns (`PatientRecordsResult`),
what each stage outcome means (`check_documents`, `consolidated_next_step`), how a stored bundle is
checked (`check_bundle`: sha256, FHIR R4B validation, counts by type) and the run's artifact text.
Everything here carries ids, counts, hashes and paths only, never PHI.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from metriport_flows.client.models import RESOURCE_TYPES
from metriport_flows.domain.ids import ID_PATTERN
from metriport_flows.domain.stages import ConsolidatedReady, DocumentsReady, Outcome
from metriport_flows.domain.waits import Deadlines
from metriport_flows.settings import Settings

ResourceType = Literal[RESOURCE_TYPES]  # type: ignore[valid-type]
ConversionType = Literal["json", "pdf", "html"]
CONTENT_TYPES: dict[str, str] = {"json": "application/json", "pdf": "application/pdf", "html": "text/html"}

# The patient-records deployment as prefect.yaml names it, and its one parameter (the UI's form).
PATIENT_RECORDS_DEPLOYMENT = "patient-records/on-demand"
PATIENT_RECORDS_PARAMETER = "request"

# A bundle URL that expired is re-requested once (attempt 2); a second expiry fails the run.
MAX_CONSOLIDATED_ATTEMPTS = 2


# A date as the form and the server check it when the run is created (Prefect's server does not check
# JSON Schema's "format", so the pattern does); pydantic parses it into a `date` when the run starts.
ISO_DATE_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"
# Optional fields are shown as plain inputs (an empty one means "the default"), not as a choice whose
# second branch the UI renders as 'Property is type "None"'.
OptionalId = Annotated[str | None, WithJsonSchema({"type": "string", "maxLength": 64, "pattern": ID_PATTERN})]
OptionalDate = Annotated[date | None, WithJsonSchema({"type": "string", "format": "date", "pattern": ISO_DATE_PATTERN})]
OptionalSeconds = Annotated[float | None, WithJsonSchema({"type": "number", "minimum": 0})]


def _no_null_defaults(schema: dict[str, Any]) -> None:
    """No `"default": null` in the form: the UI would send that null, which the field's type refuses; an
    empty field is left out of the parameters instead, and the model's default (None) applies."""
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None:
            del field["default"]


class PatientRecordsParams(BaseModel):
    """One patient's records: documents, then the consolidated FHIR bundle. Only the patient id is needed;
    leave the other fields empty for their defaults."""

    model_config = ConfigDict(json_schema_extra=_no_null_defaults)

    patient_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN, description="Metriport patient id")
    facility_id: OptionalId = Field(
        None,
        max_length=64,
        pattern=ID_PATTERN,
        description="Facility for the document query; default: the patient's primary one",
    )
    resources: list[ResourceType] = Field(
        default_factory=list, description="FHIR resource types to fetch; empty means all of them"
    )
    date_from: OptionalDate = Field(None, description="Only data from this date (inclusive), YYYY-MM-DD")
    date_to: OptionalDate = Field(None, description="Only data up to this date (inclusive), YYYY-MM-DD")
    conversion_type: ConversionType = Field("json", description="json (FHIR bundle), pdf or html summary")
    override: bool = Field(False, description="Force Metriport to download the documents again")
    soft_deadline_seconds: OptionalSeconds = Field(
        None, gt=0, description="After this the reconciler asks Metriport; default from settings"
    )
    hard_deadline_seconds: OptionalSeconds = Field(
        None, gt=0, description="After this a wait ends as timeout and the run fails; default from settings"
    )
    hot_window_seconds: OptionalSeconds = Field(
        None, ge=0, description="How long a wait watches in-process before suspending; default from settings"
    )

    @model_validator(mode="after")
    def _dates_in_order(self) -> "PatientRecordsParams":
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from must not be after date_to")
        return self

    def deadlines(self, settings: Settings) -> Deadlines:
        return Deadlines.of(self, settings)


class BundleSummary(BaseModel):
    """What the stored consolidated file holds: counts and a pointer, never its contents."""

    path: str | None = None
    sha256: str | None = None
    size_bytes: int = 0
    content_type: str | None = None
    resource_counts: dict[str, int] = Field(default_factory=dict)

    @property
    def total_resources(self) -> int:
        return sum(self.resource_counts.values())


class PatientRecordsResult(BaseModel):
    """What a finished run returns (and shows in its artifact)."""

    patient_id: str
    flow_run_id: str
    conversion_type: ConversionType
    documents_request_id: str | None = None
    consolidated_request_id: str | None = None
    consolidated_attempts: int = 1
    documents: int | None = Field(None, description="Documents the download message listed")
    converted: int | None = Field(None, description="Documents sent to conversion")
    empty: bool = Field(False, description="Metriport had no data for this patient")
    bundle: BundleSummary = Field(default_factory=BundleSummary)
    stage_seconds: dict[str, float] = Field(default_factory=dict, description="Wait time per stage attempt")

    @property
    def total_resources(self) -> int:
        return self.bundle.total_resources


class RecordsError(Exception):
    """A patient-records run cannot finish; the message says why (ids only) and fails the run."""


class DocumentsFailed(RecordsError):
    pass


class PatientNotFound(RecordsError):
    def __init__(self, patient_id: str) -> None:
        super().__init__(f"patient {patient_id} not found at Metriport")


class ConsolidatedFailed(RecordsError):
    pass


class DeadlinePassed(RecordsError):
    pass


class BundleUrlExpired(RecordsError):
    pass


class BundleInvalid(RecordsError):
    pass


def _why(detail: str | None) -> str:
    return f": {detail}" if detail else ""


def check_documents(result: DocumentsReady, patient_id: str) -> None:
    """Raise unless the documents stage ended ready."""
    if result.outcome == Outcome.ready:
        return
    if result.outcome == Outcome.timeout:
        raise DeadlinePassed(f"Document query for patient {patient_id} passed its hard deadline{_why(result.detail)}")
    raise DocumentsFailed(
        f"Document query {result.request_id or ''} for patient {patient_id} ended {result.outcome.value}"
        f"{_why(result.detail)}"
    )


def consolidated_next_step(result: ConsolidatedReady, attempt: int, patient_id: str) -> Literal["done", "retry"]:
    """`done` when the bundle is stored (or empty), `retry` on a first expired URL; raise otherwise."""
    if result.outcome == Outcome.ready:
        return "done"
    if result.outcome == Outcome.expired:
        if attempt < MAX_CONSOLIDATED_ATTEMPTS:
            return "retry"
        raise BundleUrlExpired(
            f"Consolidated bundle URL for patient {patient_id} expired {attempt} times; giving up{_why(result.detail)}"
        )
    if result.outcome == Outcome.timeout:
        raise DeadlinePassed(
            f"Consolidated query for patient {patient_id} passed its hard deadline{_why(result.detail)}"
        )
    raise ConsolidatedFailed(
        f"Consolidated query {result.request_id or ''} for patient {patient_id} failed{_why(result.detail)}"
    )


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> tuple[str, int]:
    """sha256 hex and size of a file, read in chunks (bundles can be large)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def validate_resource(resource: dict[str, Any]) -> None:
    """Validate one resource with fhir.resources' R4B model; errors name fields, never values."""
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(resource_type, str):
        raise BundleInvalid("Bundle entry without a resourceType")
    try:
        model = get_fhir_model_class(resource_type)
    except (ValueError, KeyError) as exc:
        raise BundleInvalid(f"Unknown FHIR resource type {resource_type!r}") from exc
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_input=False)[:3]
        fields = ", ".join(".".join(str(p) for p in e["loc"]) + f" ({e['type']})" for e in errors)
        raise BundleInvalid(f"Invalid {resource_type} {resource.get('id', '')}: {fields}") from None


def count_bundle_resources(bundle: dict[str, Any], validate: bool = True) -> dict[str, int]:
    """Count (and validate) the resources of a FHIR Bundle by resourceType."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BundleInvalid("Stored consolidated file is not a FHIR Bundle")
    counts: Counter[str] = Counter()
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if resource is None:
            raise BundleInvalid("Bundle entry without a resource")
        if validate:
            validate_resource(resource)
        counts[resource["resourceType"]] += 1
    return dict(sorted(counts.items()))


def check_bundle(result: ConsolidatedReady, conversion_type: ConversionType, validate: bool = True) -> BundleSummary:
    """Check the file the dispatcher stored: it exists, its sha256 matches, its contents parse."""
    if result.bundle_path is None:
        if result.empty:
            return BundleSummary(content_type=result.content_type)
        raise BundleInvalid("Consolidated data is ready but no bundle was stored")
    path = Path(result.bundle_path)
    if not path.is_file():
        raise BundleInvalid(f"Stored bundle {path} is missing")
    sha256, size = file_sha256(path)
    if result.sha256 and sha256 != result.sha256:
        raise BundleInvalid(f"Stored bundle {path} has sha256 {sha256}, expected {result.sha256}")
    summary = BundleSummary(
        path=str(path),
        sha256=sha256,
        size_bytes=size,
        content_type=result.content_type or CONTENT_TYPES[conversion_type],
    )
    if conversion_type == "json":
        try:
            with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
                bundle = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
            raise BundleInvalid(f"Stored bundle {path} is not JSON") from exc
        summary.resource_counts = count_bundle_resources(bundle, validate=validate)
    elif conversion_type == "pdf":
        with path.open("rb") as handle:
            if not handle.read(5).startswith(b"%PDF-"):
                raise BundleInvalid(f"Stored file {path} is not a PDF")
    else:
        with path.open("rb") as handle:
            head = handle.read(4096).lower()
        if b"<html" not in head and b"<!doctype html" not in head:
            raise BundleInvalid(f"Stored file {path} is not HTML")
    return summary


def artifact_markdown(result: PatientRecordsResult) -> str:
    """The run's artifact: stage timings, document and resource counts, where the bundle is. No PHI."""
    lines = [
        f"# Patient records: {result.patient_id}",
        "",
        "| | |",
        "|---|---|",
        f"| Flow run | `{result.flow_run_id}` |",
        f"| Conversion type | {result.conversion_type} |",
        f"| Document query | `{result.documents_request_id or '-'}` |",
        f"| Consolidated query | `{result.consolidated_request_id or '-'}` (attempt {result.consolidated_attempts}) |",
        f"| Documents | {_count(result.documents)} listed, {_count(result.converted)} converted |",
        f"| Resources | {result.total_resources}{' (empty bundle)' if result.empty else ''} |",
        f"| Bundle | `{result.bundle.path or '-'}` |",
        f"| sha256 | `{result.bundle.sha256 or '-'}` |",
        f"| Size | {result.bundle.size_bytes} bytes |",
        "",
        "## Stage timings",
        "",
        "| Stage | Seconds |",
        "|---|---:|",
        *(f"| {stage} | {seconds:.2f} |" for stage, seconds in result.stage_seconds.items()),
        "",
        "## Resources by type",
        "",
        "| Type | Count |",
        "|---|---:|",
        *(f"| {rtype} | {count} |" for rtype, count in result.bundle.resource_counts.items()),
    ]
    return "\n".join(lines) + "\n"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)
