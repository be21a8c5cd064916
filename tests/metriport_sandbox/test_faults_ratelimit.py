"""Fault scenarios (deterministic under the seed) and the per-tenant, per-operation rate limiter."""

from __future__ import annotations

import httpx
import pytest

from metriport_sandbox.app import create_app
from metriport_sandbox.errors import ApiError
from metriport_sandbox.faults import FaultScenario
from metriport_sandbox.ratelimit import RateLimiter
from tests.fixtures.emulator import api_key_for
from tests.fixtures.sandbox import FACILITY, JANE, WebhookReceiver, flush, person


def test_fault_spec_parsing():
    scenario = FaultScenario.parse(
        "duplicate=0.3,drop=0.1,reorder=0.5,api_5xx=0.1,api_429=0.05,url_lifetime=0,stuck_dq=1.0,"
        "api_429.documentQuery=0.5",
        seed=7,
    )
    assert (scenario.duplicate, scenario.drop, scenario.reorder) == (0.3, 0.1, 0.5)
    assert scenario.url_lifetime == 0 and scenario.stuck_dq == 1.0 and scenario.op_429 == {"documentQuery": 0.5}
    assert FaultScenario.parse("stuck_patients=p1|p2").stuck_patients == {"p1", "p2"}
    assert FaultScenario.parse("stuck_patients=p1").dq_stuck("p1") and not FaultScenario().dq_stuck("p1")
    with pytest.raises(ValueError):
        FaultScenario.parse("bogus=1")
    with pytest.raises(ValueError):
        FaultScenario.parse("drop=2")
    with pytest.raises(ValueError):
        FaultScenario.parse("drop")


def test_fault_decisions_depend_only_on_seed_and_key():
    one, two, other = FaultScenario(drop=0.5, seed=1), FaultScenario(drop=0.5, seed=1), FaultScenario(drop=0.5, seed=2)
    keys = [f"t:medical.document-download:{n}" for n in range(200)]
    picks = [one.chance(one.drop, "drop", k) for k in keys]
    assert picks == [two.chance(two.drop, "drop", k) for k in keys]
    assert picks != [other.chance(other.drop, "drop", k) for k in keys]
    assert 60 < sum(picks) < 140


async def run_scenario(config_factory, seed: int) -> list[tuple]:
    """Five patients' document queries under duplicate+drop faults; the deliveries, id-free."""
    receiver = WebhookReceiver()
    app = create_app(config_factory(seed=seed, faults="duplicate=0.4,drop=0.3"))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://e", headers={"x-api-key": api_key_for("fault-tenant")}
        ) as client:
            await client.post("/settings", json={"webhookUrl": receiver.url})
            facility_id = (await client.post("/medical/v1/facility", json=FACILITY)).json()["id"]
            for n in range(5):
                demo = JANE if n == 0 else person(f"Kyla{n}" if n % 2 else "Kyla", f"L{n}", f"19{60 + n}-02-02")
                patient_id = (
                    await client.post("/medical/v1/patient", params={"facilityId": facility_id}, json=demo)
                ).json()["id"]
                await client.post("/medical/v1/document/query", params={"patientId": patient_id})
                await flush(client)
            rows = (await client.get("/_sandbox/deliveries")).json()
            failed_before = (await client.get("/settings/webhook")).json()["webhookRequestsFailed"]
            await client.post("/settings/webhook/retry")
            await flush(client)
            failed_after = (await client.get("/settings/webhook")).json()["webhookRequestsFailed"]
    finally:
        receiver.close()
    outcome = sorted((r["type"], r["kind"], r["status"], r["sent"]) for r in rows if r["type"] != "ping")
    return [*outcome, ("failed", failed_before, failed_after)]


async def test_same_seed_gives_same_deliveries_and_retry_recovers_drops(emulator_config):
    first = await run_scenario(emulator_config, seed=11)
    second = await run_scenario(emulator_config, seed=11)
    assert first == second
    kinds = {(kind, status, sent) for _, kind, status, sent in first[:-1]}
    assert ("first", "failure", False) in kinds and ("duplicate", "success", True) in kinds
    failed_before, failed_after = first[-1][1], first[-1][2]
    assert failed_before > 0 and failed_after == 0


async def test_api_fault_rates_per_operation(emulator_asgi_client):
    client = emulator_asgi_client
    await client.post("/_sandbox/faults", json={"spec": "api_5xx.facility=1.0"})
    failed = await client.post("/medical/v1/facility", json=FACILITY)
    assert failed.status_code == 500 and failed.json()["title"] == "InternalServerError"
    await client.post("/_sandbox/faults", json={"spec": "api_429=1.0"})
    limited = await client.get("/medical/v1/facility")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    await client.post("/_sandbox/faults", json={})
    assert (await client.get("/medical/v1/facility")).status_code == 200
    assert (await client.get("/_sandbox/faults")).json()["api_429"] == 0.0


async def test_stuck_document_query_never_completes(emulator_asgi_client):
    client = emulator_asgi_client
    await client.post("/_sandbox/faults", json={"spec": "stuck_dq=1.0"})
    facility_id = (await client.post("/medical/v1/facility", json=FACILITY)).json()["id"]
    patient_id = (await client.post("/medical/v1/patient", params={"facilityId": facility_id}, json=JANE)).json()["id"]
    started = (await client.post("/medical/v1/document/query", params={"patientId": patient_id})).json()
    await flush(client)
    assert (await client.get("/medical/v1/document/query", params={"patientId": patient_id})).json() == started


async def test_rate_limit_answers_429_plain_text_with_headers(emulator_config):
    app = create_app(
        emulator_config(rate_limits={"documentQuery": 2, "patientCreateOrUpdate": 15, "consolidatedDataQuery": 120})
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(
            transport=transport, base_url="http://e", headers={"x-api-key": api_key_for("limited")}
        ) as client,
        httpx.AsyncClient(
            transport=transport, base_url="http://e", headers={"x-api-key": api_key_for("neighbour")}
        ) as other,
    ):
        facility_id = (await client.post("/medical/v1/facility", json=FACILITY)).json()["id"]
        created = await client.post("/medical/v1/patient", params={"facilityId": facility_id}, json=JANE)
        assert created.headers["ratelimit-limit"] == "15" and created.headers["ratelimit-remaining"] == "14"
        patient_id = created.json()["id"]
        await client.post("/_sandbox/faults", json={"stuck_patients": [patient_id]})
        for remaining in ("1", "0"):
            ok = await client.post("/medical/v1/document/query", params={"patientId": patient_id})
            assert ok.status_code == 200 and ok.headers["ratelimit-remaining"] == remaining
        refused = await client.post("/medical/v1/document/query", params={"patientId": patient_id})
        assert refused.status_code == 429
        assert refused.text == "Too many patient document query starts, please try again later."
        assert refused.headers["content-type"].startswith("text/plain")
        assert int(refused.headers["retry-after"]) > 0 and refused.headers["ratelimit-limit"] == "2"
        assert "x-ratelimit-limit" not in refused.headers
        other_facility = (await other.post("/medical/v1/facility", json=FACILITY)).json()["id"]
        other_patient = (
            await other.post("/medical/v1/patient", params={"facilityId": other_facility}, json=JANE)
        ).json()["id"]
        assert (await other.post("/medical/v1/document/query", params={"patientId": other_patient})).status_code == 200


def test_fixed_window_resets_after_the_window():
    now = [1000.0]
    limiter = RateLimiter({"documentQuery": 1}, window_seconds=60, clock=lambda: now[0])
    limiter.hit("t", "documentQuery")
    with pytest.raises(ApiError) as refused:
        limiter.hit("t", "documentQuery")
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "60"
    now[0] += 59.5
    with pytest.raises(ApiError):
        limiter.hit("t", "documentQuery")
    now[0] += 0.5
    assert limiter.hit("t", "documentQuery")["RateLimit-Remaining"] == "0"
    assert limiter.hit("t", "facility") == {}


async def test_slow_receiver_times_out_and_is_recorded(emulator_config):
    receiver = WebhookReceiver(delay=0.5)
    app = create_app(emulator_config(webhook_timeout=0.1))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://e",
            headers={"x-api-key": api_key_for("slow-tenant")},
        ) as client:
            await client.post("/settings", json={"webhookUrl": receiver.url})
            facility_id = (await client.post("/medical/v1/facility", json=FACILITY)).json()["id"]
            patient_id = (
                await client.post("/medical/v1/patient", params={"facilityId": facility_id}, json=person())
            ).json()["id"]
            await client.post("/medical/v1/document/query", params={"patientId": patient_id})
            await flush(client)
            rows = (await client.get("/_sandbox/webhook-requests")).json()
            assert [(r["status"], r["statusDetail"]) for r in rows] == [("failure", "timeout of 100ms exceeded")]
    finally:
        receiver.close()


async def test_reorder_holds_messages_back(emulator_config):
    """With reorder=1 every first send waits a seeded fraction of reorder_delay: messages whose fractions are
    clearly apart (100 ms) arrive in the fractions' order, not in creation order."""
    receiver = WebhookReceiver()
    app = create_app(emulator_config(seed=5, faults="reorder=1.0,reorder_delay=1.0"))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://e",
            headers={"x-api-key": api_key_for("reorder-tenant")},
        ) as client:
            await client.post("/settings", json={"webhookUrl": receiver.url})
            facility_id = (await client.post("/medical/v1/facility", json=FACILITY)).json()["id"]
            created = []
            for n in range(6):
                patient_id = (
                    await client.post("/medical/v1/patient", params={"facilityId": facility_id}, json=person(f"R{n}"))
                ).json()["id"]
                await client.post("/medical/v1/document/query", params={"patientId": patient_id})
                created.append(patient_id)
            await flush(client)
            backend = app.state.backend
            keys = [r.fault_key for t in backend.tenants.values() for r in t.webhooks]
        arrived = [m.json()["patients"][0]["patientId"] for m in receiver.wait_for(6, "medical.document-download")]
        fractions = [backend.faults.fraction("reorder", key) for key in keys]
        position = {pid: arrived.index(pid) for pid in created}
        assert arrived != created
        for i, j in ((i, j) for i in range(6) for j in range(6) if fractions[i] + 0.1 < fractions[j]):
            assert position[created[i]] < position[created[j]]
    finally:
        receiver.close()
