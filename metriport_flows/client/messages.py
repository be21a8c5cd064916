"""Tolerant models of the webhook messages Metriport sends (docs/metriport.md §3.4–§3.5).

Metriport's real payloads are looser than its SDKs claim: `meta.requestId` may be missing, a failed
download has no `documents`, patient items carry no `type`, `size` may be a string, `filters` has no
fixed shape. So every model allows extra fields and almost every field is optional; a message whose
type is unknown (or whose typed shape still does not fit) is kept as a `GenericMessage` with its raw
dict, because the receiver must never drop a message it could not model.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

PING = "ping"
DOCUMENT_DOWNLOAD = "medical.document-download"
DOCUMENT_CONVERSION = "medical.document-conversion"
BULK_DOWNLOAD_URLS = "medical.document-bulk-download-urls"
CONSOLIDATED_DATA = "medical.consolidated-data"
BULK_PATIENT_CREATE = "medical.bulk-patient-create"
PATIENT_ADMIT = "patient.admit"
PATIENT_DISCHARGE = "patient.discharge"

COMPLETED = "completed"
FAILED = "failed"
PROCESSING = "processing"


class InvalidMessage(ValueError):
    """The body is not a Metriport message at all: not JSON, not an object, or no meta.messageId."""


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields kept."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True)


def _as_int(value: Any) -> int | None:
    """Metriport documents `size` as a number, its docs show a string: accept both, keep ints."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(float(str(value).strip()))
    except ValueError:
        return None


class Meta(WireModel):
    message_id: str
    request_id: str | None = None
    when: str | None = None
    type: str = ""
    data: dict[str, str] | None = None

    @field_validator("message_id", mode="before")
    @classmethod
    def _message_id_text(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("meta.messageId is empty")
        return str(value) if isinstance(value, int) else value

    @field_validator("request_id", mode="before")
    @classmethod
    def _blank_request_id_is_none(cls, value: Any) -> Any:
        return value or None

    @field_validator("data", mode="before")
    @classmethod
    def _data_values_as_text(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return None
        return {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in value.items()}

    @property
    def flow_run_id(self) -> str | None:
        """The run that started the query, from the metadata it sent with the start call."""
        return (self.data or {}).get("flowRunId") or None

    @property
    def stage(self) -> str | None:
        return (self.data or {}).get("stage") or None

    @property
    def when_at(self) -> datetime | None:
        """`when` as a datetime (the webhook record's creation time, repeated on retries)."""
        if not self.when:
            return None
        try:
            return datetime.fromisoformat(self.when.replace("Z", "+00:00"))
        except ValueError:
            return None


class Coding(WireModel):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableConcept(WireModel):
    coding: list[Coding] | None = None
    text: str | None = None


class DocumentRef(WireModel):
    """DocumentReferenceDTO; `url` is only present in bulk-download-urls messages."""

    id: str | None = None
    description: str | None = None
    file_name: str | None = None
    type: CodeableConcept | None = None
    status: str | None = None
    indexed: str | None = None
    mime_type: str | None = None
    size: int | None = None
    url: str | None = None

    @field_validator("size", mode="before")
    @classmethod
    def _size_as_int(cls, value: Any) -> int | None:
        return _as_int(value)


class PatientItem(WireModel):
    patient_id: str | None = None
    external_id: str | None = None
    additional_ids: dict[str, Any] | None = None
    status: str | None = None


class DocumentPatient(PatientItem):
    documents: list[DocumentRef] | None = None


class Attachment(WireModel):
    content_type: str | None = None
    url: str | None = None


class BundleEntry(WireModel):
    full_url: str | None = None
    resource: dict[str, Any] = Field(default_factory=dict)

    def attachments(self) -> list[Attachment]:
        """DocumentReference attachments, FHIR-style `content[].attachment` or flat `content[]`."""
        found = []
        for item in self.resource.get("content") or []:
            if isinstance(item, dict):
                raw = item.get("attachment") if isinstance(item.get("attachment"), dict) else item
                found.append(Attachment.model_validate(raw))
        return found


class SearchsetBundle(WireModel):
    resource_type: str | None = "Bundle"
    type: str | None = None
    total: int | None = None
    entry: list[BundleEntry] | None = None

    @field_validator("total", mode="before")
    @classmethod
    def _total_as_int(cls, value: Any) -> int | None:
        return _as_int(value)

    def attachments(self) -> list[Attachment]:
        return [a for entry in self.entry or [] for a in entry.attachments()]

    @property
    def is_empty(self) -> bool:
        return not self.attachments()


class ConsolidatedPatient(PatientItem):
    bundle: SearchsetBundle | None = None
    filters: Any = None

    def attachment_url(self, *kinds: str) -> str | None:
        """URL of the first attachment whose contentType contains one of `kinds` (e.g. "gzip")."""
        for attachment in self.bundle.attachments() if self.bundle else []:
            content_type = (attachment.content_type or "").lower()
            if attachment.url and any(kind in content_type for kind in kinds):
                return attachment.url
        return None


class BulkPatientCreate(WireModel):
    request_id: str | None = None
    status: str | None = None
    result: str | None = None
    reason: str | None = None


class NotificationPayload(WireModel):
    patient_id: str | None = None
    external_id: str | None = None
    additional_ids: dict[str, Any] | None = None
    url: str | None = None
    when_source_sent: str | None = None
    admit_timestamp: str | None = None
    discharge_timestamp: str | None = None


class WebhookMessage(WireModel):
    """Common envelope: `.meta` plus correlation helpers used by the receiver and dispatcher."""

    message_type: ClassVar[str | None] = None
    meta: Meta

    @property
    def type(self) -> str:
        return self.meta.type

    @property
    def message_id(self) -> str:
        return self.meta.message_id

    @property
    def request_id(self) -> str | None:
        return self.meta.request_id

    @property
    def patient_id(self) -> str | None:
        return None

    @property
    def flow_run_id(self) -> str | None:
        return self.meta.flow_run_id

    @property
    def stage(self) -> str | None:
        return self.meta.stage


class PingMessage(WebhookMessage):
    message_type: ClassVar[str | None] = PING
    ping: str = ""


PatientT = TypeVar("PatientT", bound=PatientItem)


class _PatientsMessage(WebhookMessage, Generic[PatientT]):
    """Metriport sends exactly one patient per message; `.patient` is that one."""

    patients: list[PatientT] = Field(default_factory=list)

    @property
    def patient(self) -> PatientT | None:
        return self.patients[0] if self.patients else None

    @property
    def patient_id(self) -> str | None:
        return (self.patient.patient_id or None) if self.patient is not None else None

    @property
    def status(self) -> str | None:
        return self.patient.status if self.patient is not None else None


class DocumentDownloadMessage(_PatientsMessage[DocumentPatient]):
    message_type: ClassVar[str | None] = DOCUMENT_DOWNLOAD


class DocumentConversionMessage(_PatientsMessage[PatientItem]):
    message_type: ClassVar[str | None] = DOCUMENT_CONVERSION


class BulkDownloadUrlsMessage(_PatientsMessage[DocumentPatient]):
    message_type: ClassVar[str | None] = BULK_DOWNLOAD_URLS


class ConsolidatedDataMessage(_PatientsMessage[ConsolidatedPatient]):
    message_type: ClassVar[str | None] = CONSOLIDATED_DATA

    @property
    def json_url(self) -> str | None:
        return self.patient.attachment_url("json") if self.patient else None

    @property
    def gzip_url(self) -> str | None:
        return self.patient.attachment_url("gzip") if self.patient else None

    @property
    def pdf_url(self) -> str | None:
        return self.patient.attachment_url("pdf") if self.patient else None

    @property
    def html_url(self) -> str | None:
        return self.patient.attachment_url("html") if self.patient else None

    @property
    def is_empty(self) -> bool:
        """True when the query found no data (empty searchset) or failed (no bundle)."""
        bundle = self.patient.bundle if self.patient else None
        return bundle is None or bundle.is_empty


class BulkPatientCreateMessage(WebhookMessage):
    message_type: ClassVar[str | None] = BULK_PATIENT_CREATE
    bulk_patient_create: BulkPatientCreate = Field(default_factory=BulkPatientCreate)

    @property
    def job_id(self) -> str | None:
        return self.bulk_patient_create.request_id or self.meta.request_id

    @property
    def status(self) -> str | None:
        return self.bulk_patient_create.status


class _NotificationMessage(WebhookMessage):
    payload: NotificationPayload = Field(default_factory=NotificationPayload)

    @property
    def patient_id(self) -> str | None:
        return self.payload.patient_id or None


class PatientAdmitMessage(_NotificationMessage):
    message_type: ClassVar[str | None] = PATIENT_ADMIT


class PatientDischargeMessage(_NotificationMessage):
    message_type: ClassVar[str | None] = PATIENT_DISCHARGE


class GenericMessage(WebhookMessage):
    """Any other type (Metriport adds types over time) or a typed message that did not fit its model."""

    raw: dict[str, Any] = Field(default_factory=dict, exclude=True)
    parse_error: str | None = Field(default=None, exclude=True)

    @property
    def patient_id(self) -> str | None:
        return raw_patient_id(self.raw)


def raw_patient_id(data: dict[str, Any], places: tuple[str, ...] = ("patients", "payload")) -> str | None:
    """The patient a message is about, from its JSON object: the first patient's id, or the payload's."""
    patients = data.get("patients")
    if "patients" in places and isinstance(patients, list) and patients and isinstance(patients[0], dict):
        return _text(patients[0].get("patientId"))
    payload = data.get("payload")
    if "payload" in places and isinstance(payload, dict):
        return _text(payload.get("patientId"))
    return None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


MESSAGE_CLASSES: dict[str, type[WebhookMessage]] = {
    cls.message_type: cls
    for cls in (
        PingMessage,
        DocumentDownloadMessage,
        DocumentConversionMessage,
        BulkDownloadUrlsMessage,
        ConsolidatedDataMessage,
        BulkPatientCreateMessage,
        PatientAdmitMessage,
        PatientDischargeMessage,
    )
    if cls.message_type is not None
}


def patient_id_of(data: dict[str, Any], message_type: str) -> str | None:
    """The patient id its typed message would give, read from the JSON object where that type keeps it,
    without validating the rest (a message whose shape does not fit keeps the raw id, as GenericMessage)."""
    cls = MESSAGE_CLASSES.get(message_type)
    if cls is None:
        return raw_patient_id(data)
    if issubclass(cls, _PatientsMessage):
        return raw_patient_id(data, ("patients",))
    if issubclass(cls, _NotificationMessage):
        return raw_patient_id(data, ("payload",))
    return None


def load_body(body: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """The JSON object of a webhook body; raises InvalidMessage when it is not one.

    Bytes must be UTF-8 (JSON.stringify's output): `json.loads` would also take UTF-16 or UTF-32, which
    the inbox cannot store as text.
    """
    if isinstance(body, dict):
        return body
    try:
        data = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
    except UnicodeDecodeError:
        raise InvalidMessage("body is not UTF-8") from None
    except RecursionError:
        raise InvalidMessage("body is nested too deeply") from None
    except ValueError as exc:
        raise InvalidMessage(f"body is not JSON: {exc.__class__.__name__}") from None
    if not isinstance(data, dict):
        raise InvalidMessage("body is not a JSON object")
    return data


def parse_message(body: bytes | str | dict[str, Any]) -> WebhookMessage:
    """Parse a webhook body into its typed message; unknown or ill-fitting types become GenericMessage."""
    try:
        return _parse(load_body(body))
    except RecursionError:
        raise InvalidMessage("body is nested too deeply") from None


def parse_meta(data: dict[str, Any]) -> Meta:
    """A message's `meta`; raises InvalidMessage when it has none or no messageId."""
    meta_raw = data.get("meta")
    if not isinstance(meta_raw, dict) or not meta_raw.get("messageId"):
        raise InvalidMessage("missing meta.messageId")
    try:
        return Meta.model_validate(meta_raw)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid meta: {exc.error_count()} error(s)") from None


def _parse(data: dict[str, Any]) -> WebhookMessage:
    meta = parse_meta(data)
    cls = MESSAGE_CLASSES.get(meta.type)
    if cls is not None:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            return GenericMessage(meta=meta, raw=data, parse_error=_summary(exc))
    return GenericMessage(meta=meta, raw=data)


def _summary(exc: ValidationError) -> str:
    """Where validation failed, without values (they may hold PHI)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in exc.errors()[:5])
