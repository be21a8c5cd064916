"""The patient-records business rules (metriport_flows.domain.patient_records), without Prefect."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from metriport_flows.domain.patient_records import (
    MAX_CONSOLIDATED_ATTEMPTS,
    RESOURCE_TYPES,
    BundleInvalid,
    BundleSummary,
    BundleUrlExpired,
    ConsolidatedFailed,
    DeadlinePassed,
    DocumentsFailed,
    PatientRecordsParams,
    PatientRecordsResult,
    artifact_markdown,
    check_bundle,
    check_documents,
    consolidated_next_step,
    count_bundle_resources,
)
from metriport_flows.domain.stages import ConsolidatedReady, DocumentsReady, Outcome
from metriport_flows.settings import Settings

PATIENT_ID = "0195d964-d166-7226-8912-76934c23c140"
SECRET_NAME = "Zelphinia"


def fhir_bundle(*, bad_birth_date: bool = False) -> dict:
    patient = {
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "name": [{"family": SECRET_NAME, "given": ["Jane"]}],
        "birthDate": "1996-13-10" if bad_birth_date else "1996-02-10",
        "gender": "female",
    }
    subject = {"reference": f"Patient/{PATIENT_ID}"}
    resources = [
        patient,
        {
            "resourceType": "Condition",
            "id": "c1",
            "subject": subject,
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
        },
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "subject": subject,
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": {"value": 72, "unit": "/min"},
        },
        {
            "resourceType": "Observation",
            "id": "o2",
            "status": "final",
            "subject": subject,
            "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
            "valueQuantity": {"value": 36.6, "unit": "Cel"},
        },
    ]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def stored(tmp_path: Path, body: bytes, name: str = "bundle.json", **fields) -> ConsolidatedReady:
    path = tmp_path / name
    path.write_bytes(body)
    return ConsolidatedReady(
        outcome=Outcome.ready,
        bundle_path=str(path),
        sha256=hashlib.sha256(body).hexdigest(),
        size_bytes=len(body),
        **fields,
    )


# -- parameters ----------------------------------------------------------------------------------


def test_params_defaults_take_deadlines_and_hot_window_from_settings() -> None:
    settings = Settings(hot_window_seconds=7, soft_deadline_seconds=60, hard_deadline_seconds=120)
    params = PatientRecordsParams(patient_id=PATIENT_ID)
    deadlines = params.deadlines(settings)
    assert (deadlines.hot_window_seconds, deadlines.soft_seconds, deadlines.hard_seconds) == (7, 60, 120)
    assert params.conversion_type == "json" and params.resources == [] and params.override is False


def test_params_overrides_win_and_a_zero_hot_window_means_suspend_at_once() -> None:
    settings = Settings(hot_window_seconds=30, soft_deadline_seconds=600, hard_deadline_seconds=3600)
    params = PatientRecordsParams(
        patient_id=PATIENT_ID, hot_window_seconds=0, soft_deadline_seconds=5, hard_deadline_seconds=9
    )
    deadlines = params.deadlines(settings)
    assert (deadlines.hot_window_seconds, deadlines.soft_seconds, deadlines.hard_seconds) == (0, 5, 9)


def test_params_accept_only_metriport_resource_types() -> None:
    assert PatientRecordsParams(patient_id=PATIENT_ID, resources=["Condition", "Observation"]).resources == [
        "Condition",
        "Observation",
    ]
    with pytest.raises(ValidationError):
        PatientRecordsParams(patient_id=PATIENT_ID, resources=["condition"])
    with pytest.raises(ValidationError):
        PatientRecordsParams(patient_id=PATIENT_ID, resources=["Binary"])


def test_params_reject_dates_out_of_order_and_ids_that_are_not_ids() -> None:
    with pytest.raises(ValidationError, match="date_from"):
        PatientRecordsParams(patient_id=PATIENT_ID, date_from=date(2024, 2, 1), date_to=date(2024, 1, 1))
    with pytest.raises(ValidationError):
        PatientRecordsParams(patient_id="Jane Smith 1996-02-10")
    with pytest.raises(ValidationError):
        PatientRecordsParams(patient_id=PATIENT_ID, conversion_type="xml")


def test_params_schema_gives_the_ui_a_form_with_choices() -> None:
    schema = PatientRecordsParams.model_json_schema()
    assert set(schema["properties"]) >= {
        "patient_id",
        "facility_id",
        "resources",
        "date_from",
        "date_to",
        "conversion_type",
        "override",
        "soft_deadline_seconds",
        "hard_deadline_seconds",
        "hot_window_seconds",
    }
    assert schema["properties"]["resources"]["items"]["enum"] == list(RESOURCE_TYPES)
    assert schema["properties"]["conversion_type"]["enum"] == ["json", "pdf", "html"]
    assert schema["required"] == ["patient_id"]


def test_every_accepted_resource_type_has_an_r4b_model() -> None:
    assert len(RESOURCE_TYPES) == len(set(RESOURCE_TYPES)) == 65
    for resource_type in RESOURCE_TYPES:
        assert get_fhir_model_class(resource_type).__name__ == resource_type


# -- outcomes ------------------------------------------------------------------------------------


def test_documents_ready_passes_and_other_outcomes_fail_clearly() -> None:
    check_documents(DocumentsReady(outcome=Outcome.ready, documents=7, converted=1), PATIENT_ID)
    with pytest.raises(DocumentsFailed, match=f"rq-1 for patient {PATIENT_ID} ended failed: HIE down"):
        check_documents(DocumentsReady(outcome=Outcome.failed, request_id="rq-1", detail="HIE down"), PATIENT_ID)
    with pytest.raises(DeadlinePassed, match="hard deadline"):
        check_documents(DocumentsReady(outcome=Outcome.timeout), PATIENT_ID)


def test_consolidated_outcomes_retry_an_expired_url_once() -> None:
    ready = ConsolidatedReady(outcome=Outcome.ready, empty=True)
    assert consolidated_next_step(ready, 1, PATIENT_ID) == "done"
    expired = ConsolidatedReady(outcome=Outcome.expired)
    assert consolidated_next_step(expired, 1, PATIENT_ID) == "retry"
    with pytest.raises(BundleUrlExpired, match="expired 2 times"):
        consolidated_next_step(expired, MAX_CONSOLIDATED_ATTEMPTS, PATIENT_ID)
    with pytest.raises(ConsolidatedFailed, match="rq-9 for patient"):
        consolidated_next_step(ConsolidatedReady(outcome=Outcome.failed, request_id="rq-9"), 1, PATIENT_ID)
    with pytest.raises(DeadlinePassed):
        consolidated_next_step(ConsolidatedReady(outcome=Outcome.timeout), 2, PATIENT_ID)


# -- the stored bundle ---------------------------------------------------------------------------


def test_json_bundle_is_hashed_validated_and_counted(tmp_path: Path) -> None:
    body = json.dumps(fhir_bundle()).encode()
    summary = check_bundle(stored(tmp_path, body), "json")
    assert summary.resource_counts == {"Condition": 1, "Observation": 2, "Patient": 1}
    assert summary.total_resources == 4
    assert summary.sha256 == hashlib.sha256(body).hexdigest() and summary.size_bytes == len(body)
    assert summary.content_type == "application/json"


def test_a_gzip_bundle_is_read_through_gzip(tmp_path: Path) -> None:
    import gzip

    summary = check_bundle(stored(tmp_path, gzip.compress(json.dumps(fhir_bundle()).encode()), "b.json.gz"), "json")
    assert summary.total_resources == 4


def test_a_changed_file_fails_the_sha256_check(tmp_path: Path) -> None:
    result = stored(tmp_path, json.dumps(fhir_bundle()).encode())
    Path(result.bundle_path).write_bytes(json.dumps(fhir_bundle())[:-1].encode() + b" }")
    with pytest.raises(BundleInvalid, match="expected " + result.sha256):
        check_bundle(result, "json")


def test_an_invalid_resource_is_named_without_its_values(tmp_path: Path) -> None:
    result = stored(tmp_path, json.dumps(fhir_bundle(bad_birth_date=True)).encode())
    with pytest.raises(BundleInvalid) as failure:
        check_bundle(result, "json")
    message = str(failure.value)
    assert "Invalid Patient" in message and "birthDate" in message
    assert "1996-13-10" not in message and SECRET_NAME not in message


def test_not_a_bundle_or_not_json_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(BundleInvalid, match="not JSON"):
        check_bundle(stored(tmp_path, b"<xml/>"), "json")
    with pytest.raises(BundleInvalid, match="not a FHIR Bundle"):
        count_bundle_resources({"resourceType": "Patient"})
    with pytest.raises(BundleInvalid, match="Unknown FHIR resource type"):
        count_bundle_resources({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Nope"}}]})


def test_an_empty_bundle_has_zero_resources_and_no_file() -> None:
    summary = check_bundle(ConsolidatedReady(outcome=Outcome.ready, empty=True), "json")
    assert summary == BundleSummary() and summary.total_resources == 0


def test_ready_without_a_file_or_with_a_missing_file_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(BundleInvalid, match="no bundle was stored"):
        check_bundle(ConsolidatedReady(outcome=Outcome.ready), "json")
    with pytest.raises(BundleInvalid, match="missing"):
        check_bundle(ConsolidatedReady(outcome=Outcome.ready, bundle_path=str(tmp_path / "gone.json")), "json")


def test_pdf_and_html_summaries_are_checked_by_their_magic(tmp_path: Path) -> None:
    pdf = check_bundle(stored(tmp_path, b"%PDF-1.4\n%...\n", "r.pdf", content_type="application/pdf"), "pdf")
    assert pdf.content_type == "application/pdf" and pdf.resource_counts == {}
    html = check_bundle(stored(tmp_path, b"<!DOCTYPE html><html><body>x</body></html>", "r.html"), "html")
    assert html.content_type == "text/html"
    with pytest.raises(BundleInvalid, match="not a PDF"):
        check_bundle(stored(tmp_path, b"<html></html>", "r2.pdf"), "pdf")
    with pytest.raises(BundleInvalid, match="not HTML"):
        check_bundle(stored(tmp_path, b"%PDF-1.4", "r2.html"), "html")


def test_artifact_has_timings_counts_and_the_path_only(tmp_path: Path) -> None:
    body = json.dumps(fhir_bundle()).encode()
    summary = check_bundle(stored(tmp_path, body), "json")
    result = PatientRecordsResult(
        patient_id=PATIENT_ID,
        flow_run_id="run-1",
        conversion_type="json",
        documents_request_id="dq-1",
        consolidated_request_id="cq-1",
        documents=7,
        converted=1,
        bundle=summary,
        stage_seconds={"documents-1": 1.5, "consolidated-1": 0.25},
    )
    text = artifact_markdown(result)
    for expected in (
        "| documents-1 | 1.50 |",
        "| consolidated-1 | 0.25 |",
        "| Observation | 2 |",
        "7 listed, 1 converted",
        "| Resources | 4 |",
        summary.path,
        summary.sha256,
        "`dq-1`",
        "`cq-1`",
    ):
        assert expected in text
    assert SECRET_NAME not in text and "1996" not in text


def test_the_emulators_seed_bundles_pass_the_check(tmp_path: Path) -> None:
    """The sandbox's realistic records (helper B) are what the flow checks end to end; keep them in step."""
    import random

    from metriport_sandbox.fhir_data import bundle_json, patient_resources
    from metriport_sandbox.seed import SEED_PATIENTS

    for seed in SEED_PATIENTS:
        resources = patient_resources(PATIENT_ID, seed, random.Random(seed))
        summary = check_bundle(stored(tmp_path, bundle_json(resources), f"{seed}.json"), "json")
        assert summary.total_resources == len(resources) and summary.resource_counts["Patient"] == 1
