"""Response shapes (DTOs) in Metriport's key order."""

from __future__ import annotations

from typing import Any

from metriport_sandbox.state import Document, Facility, Patient


def facility_dto(facility: Facility) -> dict:
    return {
        "id": facility.id,
        "eTag": facility.etag,
        "oid": facility.oid,
        "name": facility.name,
        "npi": facility.npi,
        "tin": facility.tin,
        "active": facility.active,
        "address": facility.address,
    }


def patient_dto(patient: Patient) -> dict:
    demo = patient.demographics
    body: dict[str, Any] = {"id": patient.id, "eTag": patient.etag, "facilityIds": list(patient.facility_ids)}
    if patient.external_id:
        body["externalId"] = patient.external_id
    if patient.additional_ids:
        body["additionalIds"] = patient.additional_ids
    body.update(
        {
            "dateCreated": patient.date_created,
            "firstName": demo["firstName"],
            "lastName": demo["lastName"],
            "dob": demo["dob"],
            "genderAtBirth": demo["genderAtBirth"],
            "personalIdentifiers": demo.get("personalIdentifiers") or [],
            "address": demo["address"],
        }
    )
    if demo.get("contact") is not None:
        body["contact"] = demo["contact"]
    return body


def patient_fhir(patient: Patient) -> dict:
    demo = patient.demographics
    return {
        "resourceType": "Patient",
        "id": patient.id,
        "name": [{"family": demo["lastName"], "given": [demo["firstName"]]}],
        "gender": {"M": "male", "F": "female", "O": "other"}.get(demo["genderAtBirth"], "unknown"),
        "birthDate": demo["dob"],
        "address": [
            {
                "line": [a["addressLine1"]],
                "city": a["city"],
                "state": a["state"],
                "postalCode": a["zip"],
                "country": a["country"],
            }
            for a in demo["address"]
        ],
    }


def patient_item(patient: Patient) -> dict:
    """The head of a webhook patient item: patientId, externalId?, additionalIds? (no `type`)."""
    item: dict[str, Any] = {"patientId": patient.id}
    if patient.external_id:
        item["externalId"] = patient.external_id
    if patient.additional_ids:
        item["additionalIds"] = patient.additional_ids
    return item


def document_dto(doc: Document) -> dict:
    return {
        "id": doc.id,
        "description": doc.description,
        "fileName": doc.file_name,
        "type": doc.type,
        "status": doc.status,
        "indexed": doc.indexed,
        "mimeType": doc.mime_type,
        "size": doc.size,
    }


def document_fhir(doc: Document, public_url: str) -> dict:
    org_id = f"org-{doc.id[-12:]}"
    return {
        "resourceType": "DocumentReference",
        "id": doc.id,
        "contained": [{"resourceType": "Organization", "id": org_id, "name": doc.organization}],
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": doc.id},
        "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986", "value": doc.id}],
        "status": doc.status,
        "type": doc.type,
        "subject": {"reference": f"Patient/{doc.patient_id}"},
        "date": doc.indexed,
        "author": [{"reference": f"#{org_id}", "type": "Organization"}],
        "description": doc.description,
        "content": [
            {
                "attachment": {
                    "contentType": doc.mime_type,
                    "url": f"{public_url}/{doc.file_name}",
                    "title": doc.file_name,
                    "size": doc.size,
                    "creation": doc.indexed,
                }
            }
        ],
    }
