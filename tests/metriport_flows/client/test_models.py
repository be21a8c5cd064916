"""Response models accept the loose shapes Metriport really returns (docs/metriport.md §2, §6.2)."""

from __future__ import annotations

from metriport_flows.client.models import (
    RESOURCE_TYPES,
    ConsolidatedQueries,
    Demographics,
    DocumentQueryProgress,
    FhirDocumentReference,
    Patient,
    WebhookSettings,
)


def test_document_query_progress_shapes() -> None:
    never = DocumentQueryProgress.model_validate({})
    assert never.request_id is None and not never.is_processing
    stored = DocumentQueryProgress.model_validate(
        {
            "download": {"total": 7, "status": "completed", "successful": 7, "webhookSent": True},
            "convert": {"total": 1, "status": "processing"},
            "requestId": "r",
            "startedAt": "2026-01-01T00:00:00.000Z",
            "triggerConsolidated": False,
        }
    )
    assert stored.is_processing and stored.download.webhook_sent and stored.convert.total == 1
    started = DocumentQueryProgress.model_validate({"download": {"status": "processing"}, "requestId": "r"})
    assert started.convert is None and started.is_processing


def test_consolidated_queries_may_be_null() -> None:
    none = ConsolidatedQueries.model_validate({"status": None, "queries": None, "message": "x"})
    assert none.queries is None
    some = ConsolidatedQueries.model_validate(
        {"queries": [{"requestId": "q", "status": "processing", "resources": [], "conversionType": "json"}]}
    )
    assert some.queries[0].request_id == "q" and some.queries[0].conversion_type == "json"


def test_patient_keeps_phi_out_of_repr_and_accepts_single_address() -> None:
    patient = Patient.model_validate(
        {
            "id": "p",
            "facilityIds": ["f"],
            "firstName": "Jane",
            "lastName": "Smith",
            "dob": "1996-02-10",
            "genderAtBirth": "F",
            "address": {"addressLine1": "123 Arsenal St", "city": "Phoenix", "state": "AZ", "zip": "85300"},
            "contact": {"phone": "5555550100"},
        }
    )
    assert patient.address[0].city == "Phoenix" and patient.contact[0].phone == "5555550100"
    shown = repr(patient)
    assert "Jane" not in shown and "1996" not in shown and "Arsenal" not in shown and "'p'" in shown


def test_demographics_dump_camel_case() -> None:
    demographics = Demographics(
        first_name="Jane",
        last_name="Smith",
        dob="1996-02-10",
        gender_at_birth="F",
        address=[{"address_line1": "123 Arsenal St", "city": "Phoenix", "state": "AZ", "zip": "85300"}],
    )
    body = demographics.model_dump(by_alias=True, exclude_none=True)
    assert body["firstName"] == "Jane" and body["genderAtBirth"] == "F"
    assert body["address"] == [
        {"addressLine1": "123 Arsenal St", "city": "Phoenix", "state": "AZ", "zip": "85300", "country": "USA"}
    ]


def test_fhir_document_reference_file_name_and_webhook_key_secret() -> None:
    doc = FhirDocumentReference.model_validate(
        {
            "resourceType": "DocumentReference",
            "id": "d",
            "content": [{"attachment": {"title": "JaneSmith.xml", "contentType": "application/xml", "size": 10}}],
        }
    )
    assert (doc.file_name, doc.content_type, doc.size) == ("JaneSmith.xml", "application/xml", 10)
    assert FhirDocumentReference.model_validate({"content": []}).file_name is None
    settings = WebhookSettings.model_validate({"id": "s", "webhookUrl": "http://h/w", "webhookKey": "k" * 21})
    assert "kkkk" not in repr(settings) and settings.webhook_key.get_secret_value() == "k" * 21


def test_resource_types_is_metriports_list():
    assert len(RESOURCE_TYPES) == len(set(RESOURCE_TYPES)) == 65
    assert RESOURCE_TYPES[-3:] == ("AdverseEvent", "Task", "Practitioner")
    assert {
        "AllergyIntolerance",
        "Condition",
        "DiagnosticReport",
        "DocumentReference",
        "Encounter",
        "Immunization",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Procedure",
        "MedicationStatement",
    } <= set(RESOURCE_TYPES)
    assert not {"Patient", "Medication", "Organization"} & set(RESOURCE_TYPES)
