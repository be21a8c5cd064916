"""Bulk patient create: upload URL (PUT, single use), row validation, webhooks, result CSV."""

from __future__ import annotations

import csv
import io

from tests.fixtures.sandbox import FACILITY, flush, set_webhook

CSV = (
    "externalId,firstName,lastName,dob,gender,addressLine1,city,state,zip,phone,email\n"
    "e1,Jane,Smith,1996-02-10,F,123 Arsenal St,Phoenix,AZ,85300,4155550100,\n"
    "e2,Pat,Doe,19800101,M,1 Main St,Eugene,OR,97401,,pat@example.com\n"
    "e3,Broken,Row,1980-01-01,M,1 Main St,,OR,97401,,\n"
)


async def test_bulk_create_full_cycle(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    facility_id = (await client.post("/medical/v1/facility", json=FACILITY)).json()["id"]
    job = (await client.post("/medical/v1/patient/bulk")).json()
    assert list(job) == ["requestId", "facilityId", "status", "uploadUrl", "params", "createdAt"]
    assert job["facilityId"] == facility_id and job["status"] == "waiting" and job["params"] == {"dryRun": False}
    assert "X-Amz-Expires=600" in job["uploadUrl"]
    upload = await client.put(job["uploadUrl"], content=CSV.encode(), headers={"content-type": "text/csv"})
    assert upload.status_code == 200
    again = await client.put(job["uploadUrl"], content=CSV.encode())
    assert again.status_code == 403
    await flush(client)
    messages = [m.json() for m in webhook_receiver.wait_for(2, "medical.bulk-patient-create")]
    assert [m["bulkPatientCreate"]["status"] for m in messages] == ["processing", "completed"]
    assert all(m["meta"]["requestId"] == job["requestId"] and "data" not in m["meta"] for m in messages)
    assert "result" not in messages[0]["bulkPatientCreate"]
    result_url = messages[1]["bulkPatientCreate"]["result"]
    assert "X-Amz-Expires=180" in result_url
    rows = list(csv.DictReader(io.StringIO((await client.get(result_url)).text)))
    assert [r["status"] for r in rows] == ["succeeded", "succeeded", "failed"]
    assert rows[2]["reason"] and not rows[2]["metriportId"]
    patients = (await client.get("/medical/v1/patient")).json()["patients"]
    assert sorted(p["id"] for p in patients) == sorted(r["metriportId"] for r in rows[:2])
    assert len(webhook_receiver.messages("medical.document-download")) == 2


async def test_bulk_create_needs_facility_when_several_and_dry_run(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    assert (await client.post("/medical/v1/patient/bulk")).status_code == 404
    facility_id = (await client.post("/medical/v1/facility", json=FACILITY)).json()["id"]
    await client.post("/medical/v1/facility", json=FACILITY)
    assert (await client.post("/medical/v1/patient/bulk")).status_code == 400
    job = (await client.post("/medical/v1/patient/bulk", params={"facilityId": facility_id, "dryRun": "true"})).json()
    assert job["params"] == {"dryRun": True}
    await client.put(job["uploadUrl"], content=CSV.encode())
    await flush(client)
    assert (await client.get("/medical/v1/patient")).json() == {"patients": []}
    done = webhook_receiver.wait_for(2, "medical.bulk-patient-create")[1].json()
    rows = list(csv.DictReader(io.StringIO((await client.get(done["bulkPatientCreate"]["result"])).text)))
    assert [r["status"] for r in rows] == ["succeeded", "succeeded", "failed"]


async def test_control_plane_completes_a_pending_import(emulator_asgi_client, webhook_receiver):
    client = emulator_asgi_client
    await set_webhook(client, webhook_receiver.url)
    await client.post("/_sandbox/faults", json={"spec": "stuck_dq=1.0"})
    await client.post("/medical/v1/facility", json=FACILITY)
    job = (await client.post("/medical/v1/patient/bulk")).json()
    await client.put(job["uploadUrl"], content=CSV.encode())
    await flush(client)
    assert len(webhook_receiver.messages("medical.bulk-patient-create")) == 1
    forced = await client.post(f"/_sandbox/bulk-patient-create/{job['requestId']}/complete")
    assert forced.json() == {"requestId": job["requestId"], "status": "completed"}
    await flush(client)
    assert (
        webhook_receiver.wait_for(2, "medical.bulk-patient-create")[1].json()["bulkPatientCreate"]["status"]
        == "completed"
    )
