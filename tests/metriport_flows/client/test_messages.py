"""Golden samples written from docs/metriport.md (§2.4–§2.5, §3.3, §4.3) parse into the right typed messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metriport_flows.client.messages import (
    BulkDownloadUrlsMessage,
    BulkPatientCreateMessage,
    ConsolidatedDataMessage,
    DocumentConversionMessage,
    DocumentDownloadMessage,
    GenericMessage,
    InvalidMessage,
    PatientAdmitMessage,
    PatientDischargeMessage,
    PingMessage,
    parse_message,
)
from metriport_flows.client.signing import compact_json

SAMPLES = Path(__file__).parent / "samples"
PATIENT = "0195d964-d166-7226-8912-76934c23c140"
REQUEST = "0195d965-1a2b-7c3d-9e8f-0a1b2c3d4e5f"
FLOW_RUN = "8d7e1f52-8b53-4a55-9c1b-5e0f7a1c2d3e"


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.json").read_bytes()


def test_every_sample_parses_from_bytes_str_and_dict() -> None:
    names = sorted(p.stem for p in SAMPLES.glob("*.json"))
    assert len(names) >= 17
    for name in names:
        raw = sample(name)
        from_bytes = parse_message(raw)
        assert type(parse_message(raw.decode())) is type(from_bytes)
        assert type(parse_message(json.loads(raw))) is type(from_bytes)
        assert from_bytes.message_id == json.loads(raw)["meta"]["messageId"]


def test_ping_comes_before_meta_and_has_no_request_id() -> None:
    raw = sample("ping")
    assert list(json.loads(raw)) == ["ping", "meta"]
    message = parse_message(raw)
    assert isinstance(message, PingMessage)
    assert message.ping == "V1StGXR8_Z5jdHi6B-myT"
    assert message.request_id is None and message.meta.data is None
    assert message.patient_id is None and message.flow_run_id is None and message.stage is None


def test_document_download_completed_has_seven_documents_with_int_sizes() -> None:
    message = parse_message(sample("document_download_completed"))
    assert isinstance(message, DocumentDownloadMessage)
    assert message.patient_id == PATIENT and message.request_id == REQUEST
    assert message.flow_run_id == FLOW_RUN and message.stage == "documents"
    assert message.status == "completed"
    documents = message.patient.documents
    assert [d.file_name for d in documents][:2] == ["JaneSmith.xml", "demo2.pdf"]
    assert len(documents) == 7
    assert all(isinstance(d.size, int) for d in documents)
    assert documents[2].size == 91023  # sent as the string "91023"
    assert documents[0].type.coding[0].code == "34133-9"
    assert message.patient.additional_ids == {"athenahealth": ["99992"]}
    assert message.meta.when_at is not None and message.meta.when_at.year == 2026


def test_failed_download_has_no_documents_and_empty_download_has_an_empty_list() -> None:
    failed = parse_message(sample("document_download_failed"))
    assert isinstance(failed, DocumentDownloadMessage)
    assert failed.status == "failed" and failed.patient.documents is None
    empty = parse_message(sample("document_download_empty"))
    assert empty.status == "completed" and empty.patient.documents == []


def test_conversion_without_request_id_still_correlates_by_patient() -> None:
    message = parse_message(sample("document_conversion_no_request_id"))
    assert isinstance(message, DocumentConversionMessage)
    assert message.request_id is None
    assert message.patient_id == PATIENT and message.status == "completed"
    assert "documents" not in message.patient.model_dump(by_alias=True, exclude_none=True)


def test_non_ascii_sample_round_trips_through_compact_json_bytes() -> None:
    body = compact_json(json.loads(sample("document_download_unicode")))
    assert "患者".encode() in body  # left unescaped, as JSON.stringify does
    message = parse_message(body)
    assert message.patient.documents[0].description == "Résumé clínico — Überweisung 患者記録"
    assert message.meta.data["note"] == "café – 患者 ✓"


def test_bulk_download_urls_documents_carry_urls() -> None:
    message = parse_message(sample("bulk_download_urls"))
    assert isinstance(message, BulkDownloadUrlsMessage)
    assert message.stage == "bulk-download"
    assert all(d.url and "X-Amz-Expires=600" in d.url for d in message.patient.documents)


def test_consolidated_json_has_json_first_then_gzip() -> None:
    message = parse_message(sample("consolidated_json"))
    assert isinstance(message, ConsolidatedDataMessage)
    assert message.patient.bundle.type == "searchset" and message.patient.bundle.total == 1
    assert message.json_url.endswith("c.json?X-Amz-Expires=180")
    assert message.gzip_url.endswith("c.json.gz?X-Amz-Expires=180")
    assert message.pdf_url is None and not message.is_empty
    assert message.patient.filters["conversionType"] == "json"


@pytest.mark.parametrize(("name", "kind"), [("consolidated_pdf", "pdf"), ("consolidated_html", "html")])
def test_consolidated_pdf_and_html_have_one_attachment(name: str, kind: str) -> None:
    message = parse_message(sample(name))
    assert len(message.patient.bundle.attachments()) == 1
    assert getattr(message, f"{kind}_url").endswith(f"c.{kind}?X-Amz-Expires=180")
    assert message.json_url is None and message.gzip_url is None


def test_consolidated_filters_of_any_shape_and_missing_meta_data() -> None:
    message = parse_message(sample("consolidated_html"))
    assert message.patient.filters["resources"] == ["Condition"]
    assert message.meta.data is None and message.flow_run_id is None


def test_consolidated_empty_and_failed() -> None:
    empty = parse_message(sample("consolidated_empty"))
    assert empty.is_empty and empty.patient.bundle.total == 0 and empty.status == "completed"
    failed = parse_message(sample("consolidated_failed"))
    assert failed.status == "failed" and failed.patient.bundle is None and failed.is_empty


def test_flat_attachment_content_is_tolerated() -> None:
    body = json.loads(sample("consolidated_json"))
    resource = body["patients"][0]["bundle"]["entry"][0]["resource"]
    resource["content"] = [item["attachment"] for item in resource["content"]]
    message = parse_message(body)
    assert message.json_url and message.gzip_url


def test_bulk_patient_create_with_and_without_result() -> None:
    processing = parse_message(sample("bulk_patient_create_processing"))
    assert isinstance(processing, BulkPatientCreateMessage)
    assert processing.status == "processing" and processing.bulk_patient_create.result is None
    completed = parse_message(sample("bulk_patient_create_completed"))
    assert completed.status == "completed" and completed.bulk_patient_create.result.startswith("http")
    assert completed.job_id == completed.request_id == "0195d980-aaaa-7bbb-8ccc-dddddddddddd"
    assert completed.patient_id is None


def test_admit_and_discharge_payloads() -> None:
    admit = parse_message(sample("patient_admit"))
    assert isinstance(admit, PatientAdmitMessage)
    assert admit.patient_id == PATIENT and admit.payload.admit_timestamp.startswith("2026")
    assert admit.payload.discharge_timestamp is None
    discharge = parse_message(sample("patient_discharge"))
    assert isinstance(discharge, PatientDischargeMessage)
    assert discharge.payload.discharge_timestamp == "2026-11-25T10:00:00.000Z"


def test_unknown_type_is_kept_generic_with_its_raw_dict() -> None:
    raw = json.loads(sample("unknown_network_query"))
    message = parse_message(raw)
    assert isinstance(message, GenericMessage)
    assert message.type == "network-query.hie" and message.raw == raw
    assert message.patient_id == PATIENT and message.parse_error is None


def test_typed_message_that_does_not_fit_falls_back_to_generic() -> None:
    raw = json.loads(sample("document_download_completed"))
    raw["patients"] = "not a list"
    message = parse_message(raw)
    assert isinstance(message, GenericMessage)
    assert message.parse_error and "patients" in message.parse_error
    assert message.flow_run_id == FLOW_RUN


def test_extra_fields_are_kept() -> None:
    raw = json.loads(sample("consolidated_json"))
    raw["patients"][0]["truncatedGzipKey"] = "k"
    message = parse_message(raw)
    assert message.patient.model_extra["truncatedGzipKey"] == "k"


def test_meta_data_values_are_coerced_to_text() -> None:
    raw = json.loads(sample("document_download_empty"))
    raw["meta"]["data"] = {"disableWHFlag": True, "n": 3}
    assert parse_message(raw).meta.data == {"disableWHFlag": "true", "n": "3"}


@pytest.mark.parametrize(
    "body",
    [b"not json", b"\xff\xfe", "[1, 2]", b"{}", {"meta": {}}, {"meta": {"messageId": ""}}, {"meta": "x"}],
)
def test_invalid_bodies_raise_invalid_message(body: bytes | str | dict) -> None:
    with pytest.raises(InvalidMessage):
        parse_message(body)
