"""Document query (sandbox §5.1 and production §5.2), document list, download URLs, bulk download URLs."""

from __future__ import annotations

import httpx
import pytest

from metriport_sandbox.app import create_app
from tests.fixtures.emulator import api_key_for
from tests.fixtures.sandbox import flush, person, set_webhook, setup_patient

SEED_FILES = ["JaneSmith.xml", "demo2.pdf", "demo3.pdf", "demo4.pdf", "demo5.jpeg", "demo6.tif", "demo7.jpeg"]


@pytest.fixture
async def production_client(emulator_config):
    app = create_app(emulator_config(mode="production"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://emulator.test",
        headers={"x-api-key": api_key_for("prod-tenant")},
    ) as client:
        yield client


async def test_sandbox_seed_patient_gets_seven_documents_and_two_concurrent_messages(
    emulator_asgi_client, webhook_receiver
):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    _, patient_id = await setup_patient(client)
    started = await client.post(
        "/medical/v1/document/query",
        params={"patientId": patient_id},
        json={"metadata": {"flowRunId": "run-1"}, "ignored": True},
    )
    body = started.json()
    assert list(body) == ["download", "requestId", "startedAt", "triggerConsolidated"]
    assert body["download"] == {"status": "processing"} and body["triggerConsolidated"] is False
    await flush(client)
    progress = (await client.get("/medical/v1/document/query", params={"patientId": patient_id})).json()
    assert progress["download"] == {"total": 7, "status": "completed", "successful": 7}
    assert progress["convert"] == {"total": 1, "status": "completed"}
    download = webhook_receiver.wait_for(1, "medical.document-download")[0].json()
    conversion = webhook_receiver.wait_for(1, "medical.document-conversion")[0].json()
    assert list(download["meta"]) == ["messageId", "requestId", "when", "type", "data"]
    assert download["meta"]["requestId"] == body["requestId"]
    assert download["meta"]["data"] == {"flowRunId": "run-1"}
    item = download["patients"][0]
    assert list(item) == ["patientId", "documents", "status"] and item["status"] == "completed"
    assert [d["fileName"] for d in item["documents"]] == SEED_FILES
    assert list(item["documents"][0]) == [
        "id",
        "description",
        "fileName",
        "type",
        "status",
        "indexed",
        "mimeType",
        "size",
    ]
    assert "requestId" not in conversion["meta"]
    assert conversion["meta"]["data"] == {"flowRunId": "run-1"}
    assert conversion["patients"] == [{"patientId": patient_id, "status": "completed"}]


async def test_sandbox_seed_name_is_case_insensitive_and_ids_are_fresh(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    _, patient_id = await setup_patient(client, person("aNdReAs", "Sims", "1952-01-01"))
    ids = []
    for _ in range(2):
        await client.post("/medical/v1/document/query", params={"patientId": patient_id})
        await flush(client)
        docs = (await client.get("/medical/v1/document", params={"patientId": patient_id, "output": "dto"})).json()
        ids.append({d["id"] for d in docs["documents"]})
        assert len(docs["documents"]) == 7
    assert not ids[0] & ids[1]
    downloads = webhook_receiver.wait_for(2, "medical.document-download")
    assert all(len(m.json()["patients"][0]["documents"]) == 7 for m in downloads)


async def test_sandbox_non_seed_patient_gets_one_empty_download_and_no_conversion(
    emulator_asgi_client, webhook_receiver
):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    _, patient_id = await setup_patient(client, person())
    started = (await client.post("/medical/v1/document/query", params={"patientId": patient_id})).json()
    await flush(client)
    progress = (await client.get("/medical/v1/document/query", params={"patientId": patient_id})).json()
    assert progress == {"download": {"status": "completed"}, "requestId": started["requestId"]}
    messages = webhook_receiver.wait_for(1)
    assert len(messages) == 2  # the ping and the download
    download = webhook_receiver.messages("medical.document-download")[0].json()
    assert download["patients"][0]["documents"] == []
    assert "data" not in download["meta"]
    assert webhook_receiver.messages("medical.document-conversion") == []


async def test_document_query_is_single_flight_and_keeps_first_metadata(emulator_asgi_client):
    client = emulator_asgi_client
    _, patient_id = await setup_patient(client)
    await client.post("/_sandbox/faults", json={"stuck_patients": [patient_id]})
    first = (
        await client.post("/medical/v1/document/query", params={"patientId": patient_id}, json={"metadata": {"n": "1"}})
    ).json()
    second = (
        await client.post("/medical/v1/document/query", params={"patientId": patient_id}, json={"metadata": {"n": "2"}})
    ).json()
    assert second["requestId"] == first["requestId"]
    status = (await client.get("/medical/v1/document/query", params={"patientId": patient_id})).json()
    assert status == first
    await client.post("/_sandbox/faults", json={})
    requests = (await client.get("/_sandbox/webhook-requests")).json()
    assert requests == []


async def test_document_query_status_without_query_is_empty_object(emulator_asgi_client):
    _, patient_id = await setup_patient(emulator_asgi_client)
    response = await emulator_asgi_client.get("/medical/v1/document/query", params={"patientId": patient_id})
    assert response.json() == {}


async def test_document_query_rejects_bad_metadata_and_foreign_facility(emulator_asgi_client):
    client = emulator_asgi_client
    _, patient_id = await setup_patient(client)
    too_many = {"metadata": {f"k{i}": "v" for i in range(51)}}
    response = await client.post("/medical/v1/document/query", params={"patientId": patient_id}, json=too_many)
    assert response.status_code == 400
    assert response.json()["detail"] == "Record has too many properties, on [meta]"
    long_key = await client.post(
        "/medical/v1/document/query", params={"patientId": patient_id}, json={"metadata": {"k" * 41: "v"}}
    )
    assert long_key.status_code == 400
    long_value = await client.post(
        "/medical/v1/document/query", params={"patientId": patient_id}, json={"metadata": {"k": "v" * 501}}
    )
    assert long_value.status_code == 400
    foreign = await client.post("/medical/v1/document/query", params={"patientId": patient_id, "facilityId": "x"})
    assert foreign.json()["detail"] == "Patient not associated with given facility"


async def test_document_list_filters_outputs_and_download_url(emulator_asgi_client):
    client = emulator_asgi_client
    _, patient_id = await setup_patient(client)
    await client.post("/medical/v1/document/query", params={"patientId": patient_id})
    await flush(client)
    fhir = (await client.get("/medical/v1/document", params={"patientId": patient_id})).json()["documents"]
    assert {d["resourceType"] for d in fhir} == {"DocumentReference"} and len(fhir) == 7
    dto = (await client.get("/medical/v1/document", params={"patientId": patient_id, "output": "dto"})).json()
    dates = sorted(d["indexed"] for d in dto["documents"])
    window = (
        await client.get(
            "/medical/v1/document",
            params={"patientId": patient_id, "output": "dto", "dateFrom": dates[3], "dateTo": dates[3]},
        )
    ).json()["documents"]
    assert window and all(d["indexed"] == dates[3] for d in window)
    bad = await client.get("/medical/v1/document", params={"patientId": patient_id, "dateFrom": "2020-13-01"})
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.json()["detail"]
    url = (await client.get("/medical/v1/document/download-url", params={"fileName": "JaneSmith.xml"})).json()["url"]
    assert "X-Amz-Expires=180" in url
    fetched = await client.get(url)
    assert fetched.status_code == 200 and fetched.content.lstrip().startswith(b"<?xml")
    html = (
        await client.get(
            "/medical/v1/document/download-url", params={"fileName": "JaneSmith.xml", "conversionType": "html"}
        )
    ).json()["url"]
    assert b"<html" in (await client.get(html)).content.lower()
    not_xml = await client.get(
        "/medical/v1/document/download-url", params={"fileName": "demo2.pdf", "conversionType": "pdf"}
    )
    assert not_xml.status_code == 400
    assert (await client.get("/medical/v1/document/download-url", params={"fileName": "x.pdf"})).status_code == 404
    tampered = await client.get(url.replace("X-Amz-Expires=180", "X-Amz-Expires=999"))
    assert tampered.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in tampered.content
    downloads = (await client.get("/_sandbox/downloads")).json()
    assert [d["status"] for d in downloads] == [200, 200, 403]
    assert downloads[0]["size"] == len(fetched.content) and downloads[0]["patient_id"] == patient_id


async def test_url_lifetime_zero_is_always_expired(emulator_asgi_client):
    client = emulator_asgi_client
    _, patient_id = await setup_patient(client)
    await client.post("/medical/v1/document/query", params={"patientId": patient_id})
    await flush(client)
    await client.post("/_sandbox/faults", json={"spec": "url_lifetime=0"})
    url = (await client.get("/medical/v1/document/download-url", params={"fileName": "demo2.pdf"})).json()["url"]
    expired = await client.get(url)
    assert expired.status_code == 403
    assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in expired.content


async def test_bulk_download_urls_single_flight_and_webhook(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    _, patient_id = await setup_patient(client)
    await client.post("/medical/v1/document/query", params={"patientId": patient_id})
    await flush(client)
    await client.post("/_sandbox/config", json={"delay": [0.2, 0.2]})
    first = (
        await client.post(
            "/medical/v1/document/download-url/bulk", params={"patientId": patient_id}, json={"metadata": {"job": "b1"}}
        )
    ).json()
    again = (await client.post("/medical/v1/document/download-url/bulk", params={"patientId": patient_id})).json()
    assert first == again == {"status": "processing", "requestId": first["requestId"]}
    await flush(client)
    message = webhook_receiver.wait_for(1, "medical.document-bulk-download-urls")[0].json()
    assert message["meta"]["requestId"] == first["requestId"] and message["meta"]["data"] == {"job": "b1"}
    documents = message["patients"][0]["documents"]
    assert len(documents) == 7 and list(documents[0])[-1] == "url"
    assert all("X-Amz-Expires=600" in d["url"] for d in documents)
    assert (await client.get(documents[1]["url"])).content.startswith(b"%PDF")


async def test_production_sends_download_then_conversion_even_with_nothing_to_convert(
    production_client, webhook_receiver
):
    client = production_client
    await set_webhook(client, webhook_receiver.url)
    _, seed_id = await setup_patient(client)
    _, other_id = await setup_patient(client, person())
    for patient_id in (seed_id, other_id):
        await client.post("/medical/v1/document/query", params={"patientId": patient_id})
        await flush(client)
    messages = [m.json() for m in webhook_receiver.wait_for(5)[1:]]
    assert [m["meta"]["type"] for m in messages] == ["medical.document-download", "medical.document-conversion"] * 2
    assert all("requestId" in m["meta"] for m in messages)
    seed_docs = messages[0]["patients"][0]["documents"]
    assert len(seed_docs) == 7 and seed_docs[0]["fileName"].startswith("prod-tenant/" + seed_id + "/")
    assert messages[2]["patients"][0]["documents"] == []
    status = (await client.get("/medical/v1/document/query", params={"patientId": other_id})).json()
    assert status["convert"]["total"] == 0 and status["convert"]["status"] == "completed"
    await client.post("/medical/v1/document/query", params={"patientId": seed_id})
    await flush(client)
    rerun = webhook_receiver.wait_for(6)[5].json()
    assert rerun["meta"]["type"] == "medical.document-download" and rerun["patients"][0]["documents"] == []
    foreign = await client.get("/medical/v1/document/download-url", params={"fileName": "demo2.pdf"})
    assert foreign.status_code == 403


async def test_production_failed_query_sends_failed_without_documents(production_client, webhook_receiver):
    client = production_client
    await set_webhook(client, webhook_receiver.url)
    await client.post("/_sandbox/faults", json={"spec": "dq_failed=1.0"})
    _, patient_id = await setup_patient(client)
    await client.post("/medical/v1/document/query", params={"patientId": patient_id})
    await flush(client)
    download = webhook_receiver.wait_for(1, "medical.document-download")[0].json()
    assert download["patients"][0] == {"patientId": patient_id, "status": "failed"}
    conversion = webhook_receiver.wait_for(1, "medical.document-conversion")[0].json()
    assert conversion["patients"][0]["status"] == "failed"
    status = (await client.get("/medical/v1/document/query", params={"patientId": patient_id})).json()
    assert status["download"]["status"] == "failed"


async def test_a_later_query_keeps_earlier_documents_downloadable(emulator_asgi_client, webhook_receiver):
    """A second query lists fresh documents (the sandbox's latest 7); the first query's files stay in the
    bucket, so a bulk download of them under way (an admission's and a discharge's runs for one patient)
    never meets a 404."""
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    _, patient_id = await setup_patient(client)
    await client.post("/medical/v1/document/query", params={"patientId": patient_id})
    await flush(client)
    await client.post("/medical/v1/document/download-url/bulk", params={"patientId": patient_id})
    await flush(client)
    [bulk] = webhook_receiver.wait_for(1, "medical.document-bulk-download-urls")
    earlier = bulk.json()["patients"][0]["documents"]

    await client.post("/medical/v1/document/query", params={"patientId": patient_id})
    await flush(client)
    listed = (await client.get("/medical/v1/document", params={"patientId": patient_id, "output": "dto"})).json()
    assert len(listed["documents"]) == 7 and not {d["id"] for d in listed["documents"]} & {d["id"] for d in earlier}
    for document in earlier:
        fetched = await client.get(document["url"])
        assert fetched.status_code == 200, (document["id"], fetched.text[:200])
