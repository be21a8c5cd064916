"""Auth, tenants, error bodies, facilities and patients, as Metriport's server answers them."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.fixtures.sandbox import ADDRESS, FACILITY, JANE, person, setup_patient


def key(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("api_key", [None, "not-base64!", key("only-one-part"), key("a:b:c"), key("a:abcd")])
async def test_bad_api_keys_get_403(emulator_asgi_client, api_key):
    response = await emulator_asgi_client.get("/medical/v1/facility", headers={"x-api-key": api_key or ""})
    assert response.status_code == 403
    assert response.json()["status"] == 403


async def test_tenants_are_isolated(emulator_app):
    transport = httpx.ASGITransport(app=emulator_app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://e", headers={"x-api-key": key("x:alpha")}) as a,
        httpx.AsyncClient(transport=transport, base_url="http://e", headers={"x-api-key": key("y:bravo")}) as b,
    ):
        _, patient_id = await setup_patient(a)
        assert (await b.get(f"/medical/v1/patient/{patient_id}")).status_code == 404
        assert (await b.get("/medical/v1/facility")).json() == {"facilities": []}
        assert (await a.get(f"/medical/v1/patient/{patient_id}")).status_code == 200


async def test_facility_crud_and_npi_check(emulator_asgi_client):
    client = emulator_asgi_client
    created = await client.post("/medical/v1/facility", json=FACILITY)
    assert created.status_code == 201
    body = created.json()
    assert list(body) == ["id", "eTag", "oid", "name", "npi", "tin", "active", "address"]
    assert body["id"][14] == "7"  # uuidv7
    bad = await client.post("/medical/v1/facility", json={**FACILITY, "npi": "1234567890"})
    assert bad.status_code == 400
    assert bad.json()["title"] == "Missing or invalid parameters"
    assert bad.json()["name"] == "BAD_REQUEST"
    assert "on [npi]" in bad.json()["detail"]
    updated = await client.put(f"/medical/v1/facility/{body['id']}", json={**FACILITY, "name": "Renamed"})
    assert updated.json()["name"] == "Renamed" and updated.json()["eTag"] != body["eTag"]
    assert [f["id"] for f in (await client.get("/medical/v1/facility")).json()["facilities"]] == [body["id"]]
    assert (await client.get(f"/medical/v1/facility/{body['id']}")).json()["name"] == "Renamed"
    await client.post("/medical/v1/patient", params={"facilityId": body["id"]}, json=JANE)
    refused = await client.delete(f"/medical/v1/facility/{body['id']}")
    assert refused.status_code == 400
    empty = (await client.post("/medical/v1/facility", json=FACILITY)).json()["id"]
    assert (await client.delete(f"/medical/v1/facility/{empty}")).status_code == 204
    missing = await client.get(f"/medical/v1/facility/{empty}")
    assert missing.status_code == 404
    assert missing.json() == {
        "status": 404,
        "name": "NOT_FOUND",
        "title": "NotFoundError",
        "detail": "Could not find facility",
    }


async def test_patient_create_is_idempotent_on_demographics(emulator_asgi_client):
    client = emulator_asgi_client
    facility_id, patient_id = await setup_patient(client)
    again = await client.post(
        "/medical/v1/patient", params={"facilityId": facility_id}, json={**JANE, "firstName": "JANE"}
    )
    assert again.status_code == 201
    assert again.json()["id"] == patient_id
    body = (await client.get(f"/medical/v1/patient/{patient_id}")).json()
    assert list(body)[:4] == ["id", "eTag", "facilityIds", "dateCreated"]
    fhir = (await client.get(f"/medical/v1/patient/{patient_id}", params={"output": "fhir"})).json()
    assert fhir["resourceType"] == "Patient"


async def test_patient_create_validation_and_facility_param(emulator_asgi_client):
    client = emulator_asgi_client
    facility_id, _ = await setup_patient(client)
    missing = await client.post("/medical/v1/patient", json=person())
    assert missing.status_code == 400
    invalid = await client.post(
        "/medical/v1/patient",
        params={"facilityId": facility_id},
        json={**person(), "dob": "1990/01/01", "genderAtBirth": "X"},
    )
    assert invalid.status_code == 400
    assert "on [dob]" in invalid.json()["detail"] and "on [genderAtBirth]" in invalid.json()["detail"]
    single = await client.post(
        "/medical/v1/patient",
        params={"facilityId": facility_id},
        json={**person("Solo"), "address": ADDRESS, "contact": {"phone": "+1 (415) 555-0100"}},
    )
    assert single.status_code == 201
    assert single.json()["address"] == [ADDRESS]
    assert single.json()["contact"] == [{"phone": "4155550100"}]


async def test_sandbox_patient_limit_body(emulator_asgi_client):
    client = emulator_asgi_client
    await client.post("/_sandbox/config", json={"rate_limits": {"patientCreateOrUpdate": 1000}})
    facility_id, _ = await setup_patient(client)
    for n in range(19):
        ok = await client.post(
            "/medical/v1/patient", params={"facilityId": facility_id}, json=person(f"P{n}", dob=f"19{50 + n}-01-01")
        )
        assert ok.status_code == 201
    refused = await client.post("/medical/v1/patient", params={"facilityId": facility_id}, json=person("Extra"))
    assert refused.status_code == 400
    assert refused.json() == {"message": "Cannot create more than 20 patients in Sandbox mode!"}


async def test_patient_list_with_and_without_pagination(emulator_asgi_client):
    client = emulator_asgi_client
    facility_id, first = await setup_patient(client)
    for n in range(4):
        await client.post("/medical/v1/patient", params={"facilityId": facility_id}, json=person(f"N{n}"))
    plain = (await client.get("/medical/v1/patient")).json()
    assert list(plain) == ["patients"] and len(plain["patients"]) == 5
    page = (await client.get("/medical/v1/patient", params={"count": 2})).json()
    assert page["meta"]["itemsOnPage"] == 2 and "prevPage" not in page["meta"]
    seen = [p["id"] for p in page["patients"]]
    while "nextPage" in page["meta"]:
        page = (await client.get(page["meta"]["nextPage"])).json()
        seen += [p["id"] for p in page["patients"]]
    # Pages come in id order (uuidv7: creation order, but random within one millisecond).
    assert seen == [p["id"] for p in plain["patients"]] == sorted(seen) and first in seen
    back = (await client.get(page["meta"]["prevPage"])).json()
    assert [p["id"] for p in back["patients"]] == seen[2:4]
    other = (await client.get("/medical/v1/patient", params={"facilityId": "nope"})).json()
    assert other == {"patients": []}


async def test_patient_update_etag_delete_and_match(emulator_asgi_client):
    client = emulator_asgi_client
    _, patient_id = await setup_patient(client)
    current = (await client.get(f"/medical/v1/patient/{patient_id}")).json()
    stale = await client.put(f"/medical/v1/patient/{patient_id}", json={**JANE, "eTag": "99"})
    assert stale.status_code == 412
    updated = await client.put(
        f"/medical/v1/patient/{patient_id}", json={**JANE, "lastName": "Doe", "eTag": current["eTag"]}
    )
    assert updated.status_code == 200 and updated.json()["lastName"] == "Doe"
    by_header = await client.put(f"/medical/v1/patient/{patient_id}", json=JANE, headers={"if-match": "0"})
    assert by_header.status_code == 412
    matched = await client.post("/medical/v1/patient/match", json={**JANE, "lastName": "Doe"})
    assert matched.json()["id"] == patient_id
    assert (await client.post("/medical/v1/patient/match", json=person("Ghost"))).status_code == 404
    assert (await client.delete(f"/medical/v1/patient/{patient_id}")).status_code == 204
    assert (await client.get(f"/medical/v1/patient/{patient_id}")).status_code == 404


async def test_update_during_document_query_is_423_json_string(emulator_asgi_client):
    client = emulator_asgi_client
    _, patient_id = await setup_patient(client)
    await client.post("/_sandbox/faults", json={"stuck_patients": [patient_id]})
    await client.post("/medical/v1/document/query", params={"patientId": patient_id})
    locked = await client.put(f"/medical/v1/patient/{patient_id}", json=JANE)
    assert locked.status_code == 423
    assert locked.json() == "Document querying currently in progress"
