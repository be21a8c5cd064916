"""Consolidated data queries: start, dedupe, removal of finished queries, webhook bundle shapes, files."""

from __future__ import annotations

import gzip
import json

from tests.fixtures.sandbox import flush, person, set_webhook, setup_patient


async def seeded_patient(client) -> str:
    _, patient_id = await setup_patient(client)
    await client.post("/medical/v1/document/query", params={"patientId": patient_id})
    await flush(client)
    return patient_id


def consolidated_url(patient_id: str) -> str:
    return f"/medical/v1/patient/{patient_id}/consolidated/query"


async def test_json_query_webhook_bundle_and_files(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    patient_id = await seeded_patient(client)
    started = await client.post(
        consolidated_url(patient_id), params={"conversionType": "json"}, json={"metadata": {"flowRunId": "r9"}}
    )
    query = started.json()
    assert list(query) == ["requestId", "status", "startedAt", "resources", "conversionType"]
    assert query["status"] == "processing" and query["resources"] == []
    await flush(client)
    message = webhook_receiver.wait_for(1, "medical.consolidated-data")[0].json()
    assert message["meta"]["requestId"] == query["requestId"] and message["meta"]["data"] == {"flowRunId": "r9"}
    item = message["patients"][0]
    assert list(item) == ["patientId", "status", "bundle", "filters"]
    assert item["filters"] == {"resources": "", "dateFrom": "", "dateTo": "", "conversionType": "json"}
    bundle = item["bundle"]
    assert list(bundle) == ["resourceType", "type", "total", "entry"] and bundle["type"] == "searchset"
    doc_ref = bundle["entry"][0]["resource"]
    assert doc_ref["subject"] == {"reference": f"Patient/{patient_id}"}
    attachments = [c["attachment"] for c in doc_ref["content"]]
    assert [a["contentType"] for a in attachments] == ["application/json", "application/gzip"]
    plain = (await client.get(attachments[0]["url"])).content
    zipped = (await client.get(attachments[1]["url"])).content
    assert gzip.decompress(zipped) == plain
    record = json.loads(plain)
    types = {e["resource"]["resourceType"] for e in record["entry"]}
    assert {"Patient", "Condition", "Observation", "Encounter"} <= types
    hook = (
        await client.get(
            f"/medical/v1/patient/{patient_id}/consolidated/webhook", params={"requestId": query["requestId"]}
        )
    ).json()
    assert hook["status"] == "completed" and hook["fileUrl"] == attachments[0]["url"]
    assert hook["gzipUrl"] == attachments[1]["url"]


async def test_filters_and_pdf_html_single_attachment(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    patient_id = await seeded_patient(client)
    await client.post(
        consolidated_url(patient_id),
        params={"conversionType": "json", "resources": "Condition,Encounter", "dateFrom": "2000-01-01"},
    )
    await flush(client)
    message = webhook_receiver.wait_for(1, "medical.consolidated-data")[0].json()["patients"][0]
    assert message["filters"] == {
        "resources": "Condition, Encounter",
        "dateFrom": "2000-01-01",
        "dateTo": "",
        "conversionType": "json",
    }
    url = message["bundle"]["entry"][0]["resource"]["content"][0]["attachment"]["url"]
    types = {e["resource"]["resourceType"] for e in (await client.get(url)).json()["entry"]}
    assert "Condition" in types and not types & {"Observation", "Immunization", "AllergyIntolerance"}
    for kind, media, magic in (("pdf", "application/pdf", b"%PDF"), ("html", "text/html", b"<")):
        await client.post(consolidated_url(patient_id), params={"conversionType": kind})
        await flush(client)
        item = webhook_receiver.messages("medical.consolidated-data")[-1].json()["patients"][0]
        content = item["bundle"]["entry"][0]["resource"]["content"]
        assert [c["attachment"]["contentType"] for c in content] == [media]
        assert item["filters"] == {"resources": "", "conversionType": kind}
        assert (await client.get(content[0]["attachment"]["url"])).content.lstrip().startswith(magic)


async def test_patient_without_data_gets_empty_bundle(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    _, patient_id = await setup_patient(client, person())
    await client.post(consolidated_url(patient_id), params={"conversionType": "json", "dateTo": "2020-01-01"})
    await flush(client)
    item = webhook_receiver.wait_for(1, "medical.consolidated-data")[0].json()["patients"][0]
    assert item["bundle"] == {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}
    assert item["filters"] == {"resources": "", "dateTo": "2020-01-01", "conversionType": "json"}


async def test_dedupe_while_processing_and_removal_of_finished_queries(emulator_asgi_client):
    client = emulator_asgi_client
    _, patient_id = await setup_patient(client)
    empty = (await client.get(consolidated_url(patient_id))).json()
    assert empty == {"status": None, "queries": None}
    await client.post("/_sandbox/config", json={"delay": [0.3, 0.3]})
    first = (
        await client.post(
            consolidated_url(patient_id), params={"conversionType": "json", "resources": "Condition,Encounter"}
        )
    ).json()
    same = (
        await client.post(
            consolidated_url(patient_id), params={"conversionType": "json", "resources": "Encounter,Condition"}
        )
    ).json()
    other = (await client.post(consolidated_url(patient_id), params={"conversionType": "pdf"})).json()
    assert same["requestId"] == first["requestId"] and other["requestId"] != first["requestId"]
    listing = (await client.get(consolidated_url(patient_id))).json()
    assert [q["requestId"] for q in listing["queries"]] == [first["requestId"], other["requestId"]]
    await flush(client)
    done = (await client.get(f"{consolidated_url(patient_id)}/{first['requestId']}")).json()
    assert done["status"] == "completed"
    await client.post("/_sandbox/config", json={"delay": [0, 0]})
    third = (await client.post(consolidated_url(patient_id), params={"conversionType": "html"})).json()
    gone = await client.get(f"{consolidated_url(patient_id)}/{first['requestId']}")
    assert gone.status_code == 404 and gone.json()["detail"] == "Consolidated query not found"
    assert [q["requestId"] for q in (await client.get(consolidated_url(patient_id))).json()["queries"]] == [
        third["requestId"]
    ]


async def test_consolidated_validation(emulator_asgi_client):
    client = emulator_asgi_client
    _, patient_id = await setup_patient(client)
    missing = await client.post(consolidated_url(patient_id))
    assert missing.status_code == 400 and "on [conversionType]" in missing.json()["detail"]
    wrong = await client.post(consolidated_url(patient_id), params={"conversionType": "xml"})
    assert wrong.status_code == 400
    bad_type = await client.post(
        consolidated_url(patient_id), params={"conversionType": "json", "resources": "condition"}
    )
    assert bad_type.status_code == 400
    bad_date = await client.post(
        consolidated_url(patient_id), params={"conversionType": "json", "dateFrom": "01-01-2020"}
    )
    assert "Date must be in format YYYY-MM-DD" in bad_date.json()["detail"]


async def test_from_dashboard_suppresses_webhook_but_records_success(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    patient_id = await seeded_patient(client)
    await client.post(consolidated_url(patient_id), params={"conversionType": "json", "fromDashboard": "true"})
    await flush(client)
    assert webhook_receiver.messages("medical.consolidated-data") == []
    stored = [
        r for r in (await client.get("/_sandbox/webhook-requests")).json() if r["type"] == "medical.consolidated-data"
    ]
    assert [r["status"] for r in stored] == ["success"]


async def test_big_bundle_knob_streams_a_file_of_the_chosen_size(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    patient_id = await seeded_patient(client)
    await client.post(f"/_sandbox/patients/{patient_id}/bundle-size", json={"bytes": 3_000_000})
    await client.post(consolidated_url(patient_id), params={"conversionType": "json"})
    await flush(client)
    item = webhook_receiver.wait_for(1, "medical.consolidated-data")[0].json()["patients"][0]
    json_url, gzip_url = (c["attachment"]["url"] for c in item["bundle"]["entry"][0]["resource"]["content"])
    body = (await client.get(json_url)).content
    assert abs(len(body) - 3_000_000) < 300_000
    assert json.loads(body)["resourceType"] == "Bundle"
    assert gzip.decompress((await client.get(gzip_url)).content) == body
    recorded = [d for d in (await client.get("/_sandbox/downloads")).json() if d["kind"] == "consolidated"]
    assert recorded[0]["size"] == len(body)


async def test_failed_consolidated_query_has_no_bundle(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    patient_id = await seeded_patient(client)
    await client.post("/_sandbox/faults", json={"spec": "consolidated_failed=1.0"})
    query = (await client.post(consolidated_url(patient_id), params={"conversionType": "json"})).json()
    await flush(client)
    item = webhook_receiver.wait_for(1, "medical.consolidated-data")[0].json()["patients"][0]
    assert item["status"] == "failed" and "bundle" not in item
    assert (await client.get(f"{consolidated_url(patient_id)}/{query['requestId']}")).json()["status"] == "failed"
    hook = (
        await client.get(
            f"/medical/v1/patient/{patient_id}/consolidated/webhook", params={"requestId": query["requestId"]}
        )
    ).json()
    assert hook == {"requestId": query["requestId"], "status": "failed", "conversionType": "json"}


async def test_count_and_medical_record_summary(emulator_asgi_client):
    client = emulator_asgi_client
    _, empty_id = await setup_patient(client, person())
    assert (await client.get(f"/medical/v1/patient/{empty_id}/consolidated/count")).json()["total"] == 0
    missing = await client.get(f"/medical/v1/patient/{empty_id}/medical-record", params={"conversionType": "pdf"})
    assert missing.status_code == 404
    status = (await client.get(f"/medical/v1/patient/{empty_id}/medical-record-status")).json()
    assert status == {"html": {"exists": False}, "pdf": {"exists": False}}
    patient_id = await seeded_patient(client)
    count = (
        await client.get(
            f"/medical/v1/patient/{patient_id}/consolidated/count", params={"resources": "Condition,Observation"}
        )
    ).json()
    assert set(count["resources"]) == {"Condition", "Observation"}
    assert count["total"] == sum(count["resources"].values()) > 0
    assert count["filter"] == {"resources": "Condition, Observation", "dateFrom": None, "dateTo": None}
    assert (await client.get(f"/medical/v1/patient/{patient_id}/medical-record-status")).json()["pdf"]["exists"]
    url = (
        await client.get(f"/medical/v1/patient/{patient_id}/medical-record", params={"conversionType": "pdf"})
    ).json()["url"]
    assert "X-Amz-Expires=180" in url and (await client.get(url)).content.startswith(b"%PDF")


async def test_url_expired_fault_issues_consolidated_urls_already_expired(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    patient_id = await seeded_patient(client)
    await client.post("/_sandbox/faults", json={"spec": "url_expired=1.0"})
    await client.post(consolidated_url(patient_id), params={"conversionType": "json"})
    await flush(client)
    message = webhook_receiver.wait_for(1, "medical.consolidated-data")[0].json()
    url = message["patients"][0]["bundle"]["entry"][0]["resource"]["content"][0]["attachment"]["url"]
    assert (await client.get(url)).status_code == 403
    refused = [d for d in (await client.get("/_sandbox/downloads")).json() if d["status"] == 403]
    assert [(d["kind"], d["patient_id"]) for d in refused] == [("consolidated", patient_id)]
    document_url = (await client.get("/medical/v1/document/download-url", params={"fileName": "demo3.pdf"})).json()
    assert (await client.get(document_url["url"])).status_code == 200, "only consolidated URLs expire"
