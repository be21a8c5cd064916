"""Seed data and the emulator's FHIR record: valid R4 (R4B models), resolvable, filterable, stable."""

from __future__ import annotations

import json
import random
from datetime import date

import pytest
from fhir.resources.R4B.bundle import Bundle
from hypothesis import given, settings
from hypothesis import strategies as st

from metriport_flows.client.models import RESOURCE_TYPES
from metriport_sandbox import fhir_codes
from metriport_sandbox.fhir_data import (
    SUPPORTING_TYPES,
    bundle_json,
    filter_resources,
    patient_resources,
    references,
    resource_date,
    unresolved_references,
    validate,
)
from metriport_sandbox.seed import (
    INDEXED_DATES,
    SEED_DOCUMENTS,
    SEED_PATIENTS,
    indexed_and_status,
    is_seed,
    seed_document_files,
    seed_key,
)

SEEDS = sorted(SEED_PATIENTS)
CLINICAL_TYPES = {
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "MedicationStatement",
    "Medication",
    "AllergyIntolerance",
    "Immunization",
    "Procedure",
    "DiagnosticReport",
    "DocumentReference",
}


def record(key: str, seed: int = 7) -> list[dict]:
    return patient_resources(f"0195d964-d166-7226-8912-{SEEDS.index(key):012d}", key, random.Random(seed))


@pytest.fixture(scope="module", params=SEEDS)
def seed_record(request) -> tuple[str, list[dict]]:
    return request.param, record(request.param)


# --- seed.py ---------------------------------------------------------------------------------------


def test_seed_demographics_are_the_codes():
    jane = SEED_PATIENTS["jane"].demographics()
    assert jane == {
        "firstName": "Jane",
        "lastName": "Smith",
        "dob": "1996-02-10",
        "genderAtBirth": "F",
        "address": [
            {"addressLine1": "123 Arsenal St", "city": "Phoenix", "state": "AZ", "zip": "85300", "country": "USA"}
        ],
    }
    assert (SEED_PATIENTS["andreas"].last_name, SEED_PATIENTS["kyla"].last_name) == ("Sims", "Fields")
    assert [(p.address.city, p.address.state) for p in SEED_PATIENTS.values()] == [
        ("Phoenix", "AZ"),
        ("Chicago", "IL"),
        ("Harrisburg", "PA"),
        ("Jefferson City", "MO"),
        ("Portland", "ME"),
    ]


def test_seed_lookup_is_by_first_name_case_insensitive():
    assert is_seed("JANE") and is_seed("kYlA") and seed_key("Andreas") == "andreas"
    assert not is_seed("Janet") and seed_key("Bob") is None


def test_seven_seed_documents():
    names = [name for _, name in seed_document_files("andreas")]
    assert names == ["AndreasBrown.xml", "demo2.pdf", "demo3.pdf", "demo4.pdf", "demo5.jpeg", "demo6.tif", "demo7.jpeg"]
    xml = SEED_DOCUMENTS[0]
    assert (xml.mime_type, xml.description) == ("application/xml", "C-CDA R2.1 Patient Record")
    assert xml.type == {
        "coding": [{"system": "http://loinc.org/", "code": "34133-9", "display": "Summarization of episode note"}]
    }
    by_mime = {d.mime_type: (d.description, d.type["coding"][0]["display"]) for d in SEED_DOCUMENTS}
    assert by_mime["application/pdf"] == ("Physical Examination", "Encounter")
    assert by_mime["image/tiff"] == ("Pathology Report", "Pathology Report")
    assert by_mime["image/jpeg"] == ("Clinical Photograph or X-ray", "Photograph")


def test_indexed_and_status_follow_the_sandbox_rule():
    rng = random.Random(3)
    seen = {indexed_and_status(SEED_DOCUMENTS[1], rng) for _ in range(300)}
    assert {status for _, status in seen} == {"current", "superseded"}
    assert all((status == "current") == (INDEXED_DATES.index(day) < 3) for day, status in seen)
    assert all(indexed_and_status(SEED_DOCUMENTS[4], rng)[1] == "current" for _ in range(50))


# --- the record --------------------------------------------------------------------------------------


def test_every_resource_validates(seed_record):
    _, resources = seed_record
    for resource in resources:
        validate(resource)
    Bundle.model_validate(json.loads(bundle_json(resources)))


def test_record_has_every_clinical_type_with_real_codes(seed_record):
    _, resources = seed_record
    types = {r["resourceType"] for r in resources}
    assert CLINICAL_TYPES <= types
    assert types <= set(RESOURCE_TYPES) | {"Patient", "Medication", "Organization"}
    loinc = {
        c["code"]
        for r in resources
        if r["resourceType"] == "Observation"
        for c in r["code"]["coding"]
        if c["system"] == fhir_codes.LOINC
    }
    assert {"85354-9", "8867-4", "29463-7", "8302-2", "39156-5"} <= loinc
    assert loinc & {"4548-4", "2345-7", "2093-3"}
    for r in resources:
        if r["resourceType"] == "Condition":
            assert {c["system"] for c in r["code"]["coding"]} == {fhir_codes.SNOMED, fhir_codes.ICD10}
        if r["resourceType"] == "Medication":
            assert r["code"]["coding"][0]["system"] == fhir_codes.RXNORM
        if r["resourceType"] == "Immunization":
            assert r["vaccineCode"]["coding"][0]["system"] == fhir_codes.CVX
        if "valueQuantity" in r:
            assert r["valueQuantity"]["system"] == "http://unitsofmeasure.org"


def test_patient_carries_seed_demographics(seed_record):
    key, resources = seed_record
    patient = resources[0]
    seed = SEED_PATIENTS[key]
    assert patient["resourceType"] == "Patient"
    assert patient["name"][0] == {"use": "official", "family": seed.last_name, "given": [seed.first_name]}
    assert patient["birthDate"] == seed.dob
    assert patient["gender"] == {"F": "female", "M": "male"}[seed.gender_at_birth]
    assert patient["address"][0]["postalCode"] == seed.address.zip


def test_references_resolve_and_ids_unique(seed_record):
    _, resources = seed_record
    assert unresolved_references(resources) == []
    keys = [(r["resourceType"], r["id"]) for r in resources]
    assert len(keys) == len(set(keys))
    reports = [r for r in resources if r["resourceType"] == "DiagnosticReport"]
    by_ref = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    assert reports
    for report in reports:
        for result in report["result"]:
            target = by_ref[result["reference"]]
            assert target["resourceType"] == "Observation"
            assert target["category"][0]["coding"][0]["code"] == "laboratory"


def test_unresolved_references_notices_a_dangling_one():
    resources = record("jane")
    encounters = {r["id"] for r in resources if r["resourceType"] == "Encounter"}
    without_encounters = [r for r in resources if r["id"] not in encounters]
    assert unresolved_references(without_encounters)


def test_dates_span_years(seed_record):
    _, resources = seed_record
    years = {d.year for r in resources if (d := resource_date(r)) is not None}
    assert len(years) >= 4


def test_deterministic_for_same_rng_and_different_otherwise():
    assert record("ollie", 1) == record("ollie", 1)
    assert bundle_json(record("ollie", 1)) == bundle_json(record("ollie", 1))
    assert record("ollie", 1) != record("ollie", 2)


def test_demographics_override():
    demo = {
        "firstName": "Jane",
        "lastName": "Doe",
        "dob": "1980-01-02",
        "genderAtBirth": "O",
        "address": [
            {
                "addressLine1": "1 Main St",
                "addressLine2": "Apt 2",
                "city": "Austin",
                "state": "TX",
                "zip": "78701",
                "country": "USA",
            }
        ],
    }
    patient = patient_resources("p1", "jane", random.Random(0), demographics=demo)[0]
    validate(patient)
    assert patient["gender"] == "other"
    assert patient["address"][0]["line"] == ["1 Main St", "Apt 2"]


# --- filters and the bundle --------------------------------------------------------------------------


def test_filter_by_types_keeps_patient_and_referenced_supporting_resources():
    resources = record("kyla")
    kept = filter_resources(resources, {"Condition", "Immunization"}, None, None)
    assert {r["resourceType"] for r in kept} == {"Patient", "Condition", "Immunization", "Practitioner"}
    assert kept[0]["resourceType"] == "Patient"
    clinical = [r for r in kept if r["resourceType"] in {"Condition", "Immunization"}]
    assert len(clinical) == sum(r["resourceType"] in {"Condition", "Immunization"} for r in resources)
    requests = filter_resources(resources, {"MedicationRequest"}, None, None)
    assert {r["resourceType"] for r in requests} == {"Patient", "MedicationRequest", "Medication", "Practitioner"}
    unresolved = unresolved_references(requests)
    assert unresolved and all(t.split("/")[0] in {"Encounter", "Condition"} for t in unresolved)
    assert [r["resourceType"] for r in filter_resources(resources, {"Goal"}, None, None)] == ["Patient"]
    assert filter_resources(resources, {"condition"}, None, None) == [resources[0]]  # case-sensitive


def test_no_filter_keeps_everything():
    resources = record("chris")
    assert filter_resources(resources, None, None, None) == resources
    assert filter_resources(resources, set(), None, None) == resources


def test_date_filter_is_inclusive():
    resources = record("jane")
    encounter = next(r for r in resources if r["resourceType"] == "Encounter")
    day = date.fromisoformat(encounter["period"]["start"][:10])
    kept = filter_resources(resources, {"Encounter"}, day, day)
    assert encounter in kept
    assert all(resource_date(r) == day for r in kept if r["resourceType"] == "Encounter")
    assert {r["resourceType"] for r in kept} == {"Patient", "Encounter", "Practitioner", "Organization"}
    assert filter_resources(resources, None, date(2030, 1, 1), None) == [
        r for r in resources if resource_date(r) is None
    ]


def test_resource_date_per_type():
    assert resource_date({"resourceType": "Condition", "recordedDate": "2020-03-04"}) == date(2020, 3, 4)
    assert resource_date({"resourceType": "Encounter", "period": {"start": "2019-05"}}) == date(2019, 5, 1)
    assert resource_date({"resourceType": "Immunization", "occurrenceDateTime": "2018"}) == date(2018, 1, 1)
    assert resource_date({"resourceType": "MedicationRequest", "authoredOn": "2021-12-31T23:00:00Z"}) == date(
        2021, 12, 31
    )
    assert resource_date({"resourceType": "Patient", "birthDate": "1990-01-01"}) is None


def test_bundle_json_shape():
    resources = record("andreas")
    raw = bundle_json(resources)
    assert b"\n" not in raw and b", " not in raw[:200]
    doc = json.loads(raw)
    assert list(doc) == ["resourceType", "type", "total", "entry"]
    assert (doc["type"], doc["total"], len(doc["entry"])) == ("searchset", len(resources), len(resources))
    first = doc["entry"][0]
    assert first["fullUrl"] == f"urn:uuid:{resources[0]['id']}"
    assert first["resource"] == resources[0]
    assert json.loads(bundle_json([])) == {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}


JANE = record("jane")
dates = st.dates(min_value=date(2012, 1, 1), max_value=date(2026, 1, 1))


@settings(max_examples=200, deadline=None)
@given(first=dates, last=dates, types=st.none() | st.sets(st.sampled_from(sorted(CLINICAL_TYPES))))
def test_filter_never_returns_a_resource_outside_the_window(first, last, types):
    kept = filter_resources(JANE, types, first, last)
    assert kept[0]["resourceType"] == "Patient"
    referenced = {t for r in kept for t in references(r)}
    for resource in kept[1:]:
        when = resource_date(resource)
        assert when is None or first <= when <= last
        if types and resource["resourceType"] not in types:
            assert resource["resourceType"] in SUPPORTING_TYPES
            assert f"{resource['resourceType']}/{resource['id']}" in referenced
    expected = [
        r
        for r in JANE[1:]
        if (not types or r["resourceType"] in types) and ((w := resource_date(r)) is None or first <= w <= last)
    ]
    assert [r for r in kept[1:] if not types or r["resourceType"] in types] == expected
    assert not [t for t in unresolved_references(kept) if t.split("/")[0] in SUPPORTING_TYPES]
