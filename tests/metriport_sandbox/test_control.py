"""Control plane: reset, run-time config (URL lifetimes, delay), idle, bad fault specs."""

from __future__ import annotations

import asyncio

from tests.fixtures.sandbox import JANE, flush, setup_patient


async def test_url_lifetimes_are_configurable_at_run_time(emulator_asgi_client):
    client = emulator_asgi_client
    _, patient_id = await setup_patient(client)
    await client.post("/medical/v1/document/query", params={"patientId": patient_id})
    await flush(client)
    config = (await client.post("/_sandbox/config", json={"url_lifetimes": {"document": 60}})).json()
    assert config["url_lifetimes"] == {"document": 60} and "url_secret" not in config
    url = (await client.get("/medical/v1/document/download-url", params={"fileName": "demo3.pdf"})).json()["url"]
    assert "X-Amz-Expires=60" in url
    await client.post("/_sandbox/config", json={"url_lifetimes": {"document": 0}})
    url = (await client.get("/medical/v1/document/download-url", params={"fileName": "demo3.pdf"})).json()["url"]
    assert (await client.get(url)).status_code == 403


async def test_idle_waits_for_delayed_jobs_and_reset_forgets_everything(emulator_asgi_client):
    client = emulator_asgi_client
    _, patient_id = await setup_patient(client)
    await client.post("/_sandbox/config", json={"delay": "1,1"})
    await client.post("/medical/v1/document/query", params={"patientId": patient_id})
    running = (await client.get("/medical/v1/document/query", params={"patientId": patient_id})).json()
    assert running["download"] == {"status": "processing"}
    deadline = asyncio.get_running_loop().time() + 5
    while running["download"] == {"status": "processing"} and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
        running = (await client.get("/medical/v1/document/query", params={"patientId": patient_id})).json()
    assert running["download"] == {"total": 7, "status": "processing"}
    assert running["convert"] == {"total": 1, "status": "processing"}
    idle = (await client.get("/_sandbox/idle")).json()
    assert idle == {"idle": True, "pending": 0}
    done = (await client.get("/medical/v1/document/query", params={"patientId": patient_id})).json()
    assert done["download"]["status"] == "completed"
    assert (await client.post("/_sandbox/reset")).json() == {"reset": True}
    assert (await client.get(f"/medical/v1/patient/{patient_id}")).status_code == 404
    assert (await client.get("/_sandbox/deliveries")).json() == []


async def test_bad_fault_spec_and_config_are_400(emulator_asgi_client):
    client = emulator_asgi_client
    assert (await client.post("/_sandbox/faults", json={"spec": "drop=x"})).status_code == 400
    assert (await client.post("/_sandbox/config", json={"delay": "3,1"})).status_code == 400
    assert (
        await client.post("/_sandbox/notifications", json={"patientId": "nope", "type": "patient.admit"})
    ).status_code == 404
    assert (await client.post("/_sandbox/bulk-patient-create/nope/complete")).status_code == 404


async def test_document_query_posts_are_counted_per_patient_a_no_op_on_a_running_query_included(
    emulator_asgi_client,
):
    client = emulator_asgi_client
    await client.post("/_sandbox/config", json={"delay": "1,1"})
    _, patient_id = await setup_patient(client)
    _, other_id = await setup_patient(client, {**JANE, "firstName": "Ollie", "lastName": "Brown"})
    first = (await client.post("/medical/v1/document/query", params={"patientId": patient_id})).json()
    again = (await client.post("/medical/v1/document/query", params={"patientId": patient_id})).json()
    assert again["requestId"] == first["requestId"], "a running query answers a second start"
    await client.post("/medical/v1/document/query", params={"patientId": other_id})
    posts = (await client.get("/_sandbox/document-query-posts")).json()
    assert (posts[patient_id], posts[other_id]) == (2, 1)
    await flush(client)
